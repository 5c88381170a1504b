"""The recipe of ``medsynth train --stage clip``: a typed dataclass, YAML in and out, validated."""

from __future__ import annotations

import dataclasses
from typing import Any

from medsynth.errors import BadUsageError
from medsynth.models.clip import ENCODERS
from medsynth.recipe import Recipe

CLIP_RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                          "eval_every", "num_threads", "device")
"""Fields a resumed CLIP run may change (everything else must match the checkpoint)."""


@dataclasses.dataclass
class ClipConfig(Recipe):
    """Recipe of the contrastive image–text model (YAML keys = field names)."""

    unknown_keys_context = " for --stage clip"

    # --- data -------------------------------------------------------------------------------
    size: int | None = None
    """Square/cubic input size; None = the data's own size, at most 64 (2D) or 32 (3D)."""
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Dataset splits whose (image, description) pairs train the model; ``test`` is refused."""
    classes: list[str] | None = None
    """Use pairs of these classes only (None = all)."""
    val_fraction: float = 0.15
    """When the store describes no ``val`` images: share of the training pairs (per class,
    seeded) held out for validation retrieval and the choice of the saved step."""
    hflip: str = "auto"
    """Horizontal flips: auto (modalities without left/right meaning), yes, no."""
    vflip: str = "auto"
    """Vertical flips: auto (dermoscopy/microscopy), yes, no."""
    shift: float = 0.0625
    """Random translation of up to this fraction of the size per axis (reflect-padded)."""
    # --- network ----------------------------------------------------------------------------
    encoder: str = "small"
    """Image encoder (MONAI ResNet): small (widths 16-32-64-128), resnet10 or resnet18."""
    widths: list[int] | None = None
    """Override the encoder's four block widths (e.g. [8, 16, 32, 64] for a tiny test model)."""
    embed_dim: int = 128
    """Width of the shared image–text space."""
    text_hidden: int = 512
    """Hidden width of the text projection MLP (0 = linear)."""
    text_encoder: str = "all-MiniLM-L6-v2"
    """Frozen text encoder: the packaged all-MiniLM-L6-v2 (default) or a transformers folder."""
    text_encoder_kind: str = "auto"
    """auto, encoder (last hidden state) or decoder (LLM hidden state of text_layer)."""
    text_layer: int = -1
    """Hidden-state layer for decoder LLMs (-1 = last)."""
    max_text_tokens: int = 128
    """Token window of the text encoder (MiniLM's own limit is 256); longer texts are cut
    there, with a warning that says how many."""
    temperature: float = 0.07
    """Initial softmax temperature (CLIP's 0.07)."""
    learn_temperature: bool = True
    """Learn the temperature (clamped at 0.01), as CLIP does."""
    # --- optimisation -----------------------------------------------------------------------
    max_steps: int = 800
    """Optimizer steps in total (a resumed run continues up to this). On the 420-pair demo
    sets validation recall stops rising after 300-500 steps (the saved step is the best one)."""
    batch_size: int = 64
    """Pairs per step (the in-batch negatives: larger is a harder task)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW) after the warm-up, cosine decay to 0."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    weight_decay: float = 0.05
    """AdamW weight decay (not on norms, biases and the temperature)."""
    seed: int = 0
    """Seed of everything (init, held-out pairs, batches, augmentation); runs reproduce."""
    num_threads: int | None = None
    """CPU threads for torch (None = torch's default)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    # --- bookkeeping ------------------------------------------------------------------------
    eval_every: int = 100
    """Validation retrieval every N steps (and at the end)."""
    select: str = "best"
    """Weights saved: best (highest validation mean recall) or last."""
    checkpoint_every: int = 250
    """Write a resumable checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """Keep the newest N checkpoints."""
    log_every: int = 10
    """Write a train_log.csv row every N steps."""

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise BadUsageError(f"clip config: {msg}")

        if self.size is not None and self.size < 8:
            bad(f"size must be >= 8, got {self.size}")
        if not self.splits:
            bad("splits must not be empty")
        if "test" in self.splits:
            bad("splits must not include test: the real test split is kept for evaluation "
                "(evaluate refuses a CLIP model trained on it)")
        if not 0.0 <= self.val_fraction < 0.9:
            bad(f"val_fraction must be in [0, 0.9), got {self.val_fraction}")
        for name in ("hflip", "vflip"):
            if getattr(self, name) not in ("auto", "yes", "no"):
                bad(f"{name} must be auto, yes or no, got {getattr(self, name)!r}")
        if not 0.0 <= self.shift < 0.5:
            bad(f"shift must be in [0, 0.5), got {self.shift}")
        if self.encoder not in ENCODERS:
            bad(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.widths is not None and (len(self.widths) != 4 or min(self.widths) < 1):
            bad(f"widths needs four positive numbers, got {self.widths}")
        if self.embed_dim < 2 or self.text_hidden < 0:
            bad("embed_dim must be >= 2 and text_hidden >= 0")
        if self.text_encoder_kind not in ("auto", "encoder", "decoder"):
            bad(f"text_encoder_kind must be auto, encoder or decoder, got {self.text_encoder_kind!r}")
        if not 0.0 < self.temperature < 1.0:
            bad(f"temperature must be in (0, 1), got {self.temperature}")
        for name in ("max_steps", "batch_size", "eval_every", "checkpoint_every",
                     "keep_checkpoints", "log_every", "max_text_tokens"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            bad("batch_size must be >= 2 (the other pairs of a batch are the negatives)")
        if self.warmup_steps < 0:
            bad("warmup_steps must be >= 0")
        if self.lr <= 0 or self.weight_decay < 0:
            bad("lr must be > 0 and weight_decay >= 0")
        if self.select not in ("best", "last"):
            bad(f"select must be best or last, got {self.select!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            bad(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.num_threads is not None and self.num_threads < 1:
            bad("num_threads must be >= 1")

    @classmethod
    def tiny(cls, **changes: Any) -> ClipConfig:
        """A seconds-long recipe for tests: tiny encoder, few steps."""
        base: dict[str, Any] = dict(widths=[8, 8, 16, 16], embed_dim=16, text_hidden=32,
                                    max_steps=6, batch_size=8, warmup_steps=0, eval_every=3,
                                    checkpoint_every=3, log_every=1, num_threads=1)
        base.update(changes)
        return cls(**base)
