"""The recipe of ``medsynth train --stage clip``: a pydantic model, YAML in and out, validated."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from pydantic import Field, model_validator

from medsynth.choices import ClipEncoder, ClipSelect, ClipTextEncoderKind, Device, Flip
from medsynth.recipe import Recipe

CLIP_RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                          "eval_every", "num_threads", "device")
"""Fields a resumed CLIP run may change (everything else must match the checkpoint)."""

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]


class ClipConfig(Recipe):
    """Recipe of the contrastive image–text model (YAML keys = field names)."""

    error_prefix: ClassVar[str] = "clip config"
    unknown_keys_context: ClassVar[str] = " for --stage clip"

    # --- data -------------------------------------------------------------------------------
    size: Annotated[int, Field(ge=8)] | None = None
    """Square/cubic input size; None = the data's own size, at most 64 (2D) or 32 (3D)."""
    splits: list[str] = Field(default_factory=lambda: ["train"], min_length=1)
    """Dataset splits whose (image, description) pairs train the model; ``test`` is refused."""
    classes: list[str] | None = None
    """Use pairs of these classes only (None = all)."""
    val_fraction: Annotated[float, Field(ge=0, lt=0.9)] = 0.15
    """When the store describes no ``val`` images: share of the training pairs (per class,
    seeded) held out for validation retrieval and the choice of the saved step."""
    hflip: Flip = "auto"
    """Horizontal flips: auto (modalities without left/right meaning), yes, no."""
    vflip: Flip = "auto"
    """Vertical flips: auto (dermoscopy/microscopy), yes, no."""
    shift: Annotated[float, Field(ge=0, lt=0.5)] = 0.0625
    """Random translation of up to this fraction of the size per axis (reflect-padded)."""
    # --- network ----------------------------------------------------------------------------
    encoder: ClipEncoder = "small"
    """Image encoder (MONAI ResNet): small (widths 16-32-64-128), resnet10 or resnet18."""
    widths: list[int] | None = None
    """Override the encoder's four block widths (e.g. [8, 16, 32, 64] for a tiny test model)."""
    embed_dim: Annotated[int, Field(ge=2)] = 128
    """Width of the shared image–text space."""
    text_hidden: NonNegInt = 512
    """Hidden width of the text projection MLP (0 = linear)."""
    text_encoder: str = "all-MiniLM-L6-v2"
    """Frozen text encoder: the packaged all-MiniLM-L6-v2 (default) or a transformers folder."""
    text_encoder_kind: ClipTextEncoderKind = "auto"
    """auto, encoder (last hidden state) or decoder (LLM hidden state of text_layer)."""
    text_layer: int = -1
    """Hidden-state layer for decoder LLMs (-1 = last)."""
    max_text_tokens: PosInt = 128
    """Token window of the text encoder (MiniLM's own limit is 256); longer texts are cut
    there, with a warning that says how many."""
    temperature: Annotated[float, Field(gt=0, lt=1)] = 0.07
    """Initial softmax temperature (CLIP's 0.07)."""
    learn_temperature: bool = True
    """Learn the temperature (clamped at 0.01), as CLIP does."""
    # --- optimisation -----------------------------------------------------------------------
    max_steps: PosInt = 800
    """Optimizer steps in total (a resumed run continues up to this). On the 420-pair demo
    sets validation recall stops rising after 300-500 steps (the saved step is the best one)."""
    batch_size: Annotated[int, Field(ge=2)] = 64
    """Pairs per step (the in-batch negatives: larger is a harder task)."""
    lr: PosFloat = 1e-3
    """Peak learning rate (AdamW) after the warm-up, cosine decay to 0."""
    warmup_steps: NonNegInt = 50
    """Linear warm-up steps."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.05
    """AdamW weight decay (not on norms, biases and the temperature)."""
    seed: int = 0
    """Seed of everything (init, held-out pairs, batches, augmentation); runs reproduce."""
    num_threads: PosInt | None = None
    """CPU threads for torch (None = torch's default)."""
    device: Device = "auto"
    """auto (CUDA when present), cpu or cuda."""
    # --- bookkeeping ------------------------------------------------------------------------
    eval_every: PosInt = 100
    """Validation retrieval every N steps (and at the end)."""
    select: ClipSelect = "best"
    """Weights saved: best (highest validation mean recall) or last."""
    checkpoint_every: PosInt = 250
    """Write a resumable checkpoint every N steps (and at the end)."""
    keep_checkpoints: PosInt = 2
    """Keep the newest N checkpoints."""
    log_every: PosInt = 10
    """Write a train_log.csv row every N steps."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if "test" in self.splits:
            raise ValueError("splits must not include test: the real test split is kept for "
                             "evaluation (evaluate refuses a CLIP model trained on it)")
        if self.widths is not None and (len(self.widths) != 4 or min(self.widths) < 1):
            raise ValueError(f"widths needs four positive numbers, got {self.widths}")
        return self

    @classmethod
    def tiny(cls, **changes: Any) -> ClipConfig:
        """A seconds-long recipe for tests: tiny encoder, few steps."""
        base: dict[str, Any] = dict(widths=[8, 8, 16, 16], embed_dim=16, text_hidden=32,
                                    max_steps=6, batch_size=8, warmup_steps=0, eval_every=3,
                                    checkpoint_every=3, log_every=1, num_threads=1)
        base.update(changes)
        return cls(**base)
