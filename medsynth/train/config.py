"""The training recipe: a pydantic model in sections, flat keys in YAML, validated on creation.

The sections (``cfg.optim``, ``cfg.ae``, ...) group the keys; YAML recipes, dicts and keyword
arguments stay flat (``max_steps: 2000``, ``ae_lr: 2e-4``) and so does reading
(``cfg.max_steps`` = ``cfg.optim.max_steps``, ``cfg.ae_lr`` = ``cfg.ae.lr``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from medsynth.choices import (
    BetaSchedule,
    CcellaLoss,
    DataCache,
    DenoiserChoice,
    Flip,
    InitText,
    LongText,
    LrSchedule,
    MixedPrecision,
    NoiseSchedule,
    PredictionType,
    TextEncoderKind,
    TrainAdapter,
    values,
)
from medsynth.recipe import Recipe, Section

#: Fields that may change when a run is resumed (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                     "sample_every", "sample_per_class", "sample_steps", "sample_guidance",
                     "num_threads", "channels_last", "ae_max_steps", "ae_checkpoint_every",
                     "ae_log_every", "tf32", "sdpa_attention", "ema_foreach",
                     "fused_optimizer", "compile", "prefetch",
                     "process_group_timeout_s", "sample_batch_size", "data_cache")
NOISE_SCHEDULES = values(NoiseSchedule)

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


def _check_groups(groups_key: str, groups: int, channels_key: str, channels: list[int]) -> None:
    if groups < 1 or any(c <= 0 or c % groups for c in channels):
        raise ValueError(f"{groups_key}={groups} must divide {channels_key} {channels}")


class DataSection(Section):
    """Data."""

    size: Annotated[int, Field(ge=8)] | None = None
    """Square (2D) or cubic (3D) training size in pixels; None = the data's own size (images
    must then all match)."""
    shape: list[int] | None = None
    """Spatial training shape ``[H, W]`` or ``[D, H, W]`` (overrides size; volumes resized
    trilinearly, spacing follows). None = size, or the data's own shape."""
    spatial_dims: Literal[2, 3] | None = None
    """2 (images) or 3 (volumes): what the recipe is for; a dataset of the other kind is refused.
    None = whatever the data are."""
    splits: list[str] = Field(default_factory=lambda: ["train"], min_length=1)
    """Dataset splits to train on. Evaluate refuses models that saw the test split."""
    classes: list[str] | None = None
    """Train on these classes only (None = all classes of the dataset)."""
    hflip: Flip = "auto"
    """Horizontal flips: auto (only for modalities without left/right meaning: XC, SM, GM, ES), yes, no."""
    vflip: Flip = "auto"
    """Vertical flips: auto (only dermoscopy/microscopy: XC, SM, GM), yes, no."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.shape is not None:
            if len(self.shape) not in (2, 3) or min(self.shape) < 8:
                raise ValueError(f"shape must be [H, W] or [D, H, W] with every entry >= 8, got "
                                 f"{self.shape}")
            if self.spatial_dims is not None and len(self.shape) != self.spatial_dims:
                raise ValueError(f"shape {self.shape} has {len(self.shape)} axes but spatial_dims "
                                 f"is {self.spatial_dims}")
        return self


class PriorSection(Section):
    """Pretrained prior (docs/priors.md)."""

    init: str | None = None
    """Start from a pretrained prior instead of random weights: a medsynth model folder (train
    or refine stage; classes matched by name), a diffusers Stable Diffusion pipeline folder or a
    hub id already in the local Hugging Face cache (its VAE, UNet, scheduler and CLIP), or a
    MONAI bundle / MAISI autoencoder folder (the frozen autoencoder of a latent run). The
    network, text encoder and noise schedule come from it. CLI: --init."""
    init_text: InitText = "pipeline"
    """Stable Diffusion init: ``pipeline`` (its CLIP text encoder, 77 tokens) or ``own`` (the
    recipe's text_encoder through a learnt projection to the UNet's cross-attention width)."""
    adapter: TrainAdapter = "full"
    """How an init is adapted: ``full`` (every weight trains) or ``lora`` (peft LoRA on the
    attention projections, the class embedding trained in full beside it; needs init)."""
    lora_rank: PosInt = 8
    """LoRA rank r (adapter: lora)."""
    lora_alpha: PosFloat | None = None
    """LoRA scale numerator (update scaled by alpha / r); None = lora_rank."""
    lora_targets: list[str] | None = None
    """LoRA target modules; None = the denoiser's attention projections (to_q, to_k, to_v,
    to_out.0 for the diffusers UNet)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.adapter == "lora" and not self.init:
            raise ValueError("adapter: lora adapts a pretrained prior; set init (--init SOURCE) "
                             "or use adapter: full")
        return self


class NetworkSection(Section):
    """Network."""

    denoiser: DenoiserChoice = "auto"
    """Denoising network: auto (diffusers for 2D, monai for 3D), diffusers (UNet2DConditionModel,
    2D only, loadable with plain diffusers) or monai (DiffusionModelUNet, 2D or 3D)."""
    block_out_channels: list[int] = Field(default_factory=lambda: [32, 64, 64])
    """UNet channels per resolution level."""
    attention_levels: list[bool] = Field(default_factory=lambda: [False, True, True])
    """Cross-attention (text) per level; the mid block always attends."""
    layers_per_block: PosInt = 1
    """ResNet layers per level."""
    attention_head_dim: int = 8
    """Channels per attention head."""
    norm_num_groups: int = 8
    """GroupNorm groups (must divide every block_out_channels entry)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("attention_levels needs one entry per block_out_channels level")
        _check_groups("norm_num_groups", self.norm_num_groups, "block_out_channels",
                      self.block_out_channels)
        return self


class AutoencoderSection(Section):
    """Latent diffusion (autoencoder phase)."""

    model_config = ConfigDict(alias_generator=lambda name: f"ae_{name}")

    latent: bool = Field(False, alias="latent")
    """Latent diffusion: first train a MONAI AutoencoderKL (the ae_* keys), cache the latents of
    the training images, then train the denoiser on them (docs/train.md)."""
    autoencoder: str | None = Field(None, alias="autoencoder")
    """Reuse this trained autoencoder (its folder, or a latent model folder) instead of training
    one; implies latent. CLI: --autoencoder."""
    block_out_channels: list[int] = Field(default_factory=lambda: [32, 64, 64])
    """Autoencoder channels per level; latents are 2^(levels-1) times smaller per axis."""
    latent_channels: PosInt = 4
    """Latent channels."""
    layers_per_block: PosInt = 1
    """Autoencoder residual blocks per level."""
    norm_num_groups: int = 16
    """Autoencoder GroupNorm groups (must divide every ae_block_out_channels entry)."""
    attention: bool = False
    """Non-local attention in the autoencoder's deepest level (2D only; refused in 3D)."""
    patch_size: list[int] | None = None
    """Train the autoencoder on random patches of this spatial shape (one entry = cubic/square);
    None = whole images. Use patches where the volumes are large."""
    max_steps: PosInt = 1000
    """Autoencoder optimizer steps."""
    batch_size: PosInt = 4
    """Autoencoder patches per step."""
    lr: PosFloat = 2e-4
    """Autoencoder learning rate (Adam; the discriminator's too)."""
    warmup_steps: NonNegInt = 50
    """Autoencoder linear warm-up steps (then constant, or cosine decay)."""
    lr_schedule: LrSchedule = "constant"
    """Autoencoder learning-rate schedule after warm-up: constant or cosine (decays to 0 at
    ae_max_steps: lower loss in a short run)."""
    kl_weight: NonNegFloat = 1e-6
    """Weight of the KL term (L1 + kl_weight * KL [+ adversarial + perceptual])."""
    adv_weight: NonNegFloat = 0.0
    """Weight of the PatchDiscriminator least-squares adversarial loss (0 = off)."""
    adv_start: NonNegInt = 0
    """Autoencoder step at which the adversarial loss starts (the discriminator trains from it)."""
    perceptual_weight: NonNegFloat = 0.0
    """Weight of a perceptual loss (0 = off). Needs local weights: ae_perceptual_weights."""
    perceptual_weights: str | None = None
    """Local ResNet-50 state dict (torchvision layout) for MONAI's PerceptualLoss: nothing is
    downloaded; required when ae_perceptual_weight > 0."""
    checkpoint_every: PosInt = 250
    """Autoencoder checkpoint every N steps (and at the end of the phase)."""
    log_every: PosInt = 10
    """Write an autoencoder_log.csv row every N steps."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.autoencoder:
            self.latent = True
        if self.patch_size is not None and (len(self.patch_size) not in (1, 2, 3)
                                            or min(self.patch_size) < 4):
            raise ValueError(f"ae_patch_size must have 1 to 3 entries >= 4, got {self.patch_size}")
        _check_groups("ae_norm_num_groups", self.norm_num_groups, "ae_block_out_channels",
                      self.block_out_channels)
        if self.perceptual_weight > 0 and not self.perceptual_weights:
            raise ValueError("ae_perceptual_weight > 0 needs ae_perceptual_weights: a local "
                             "ResNet-50 state dict (MONAI's PerceptualLoss would otherwise "
                             "download weights); or set ae_perceptual_weight: 0")
        return self


class ConditioningSection(Section):
    """Conditioning."""

    text_encoder: str = "all-MiniLM-L6-v2"
    """Text encoder: the packaged all-MiniLM-L6-v2 (default), or a transformers folder/name."""
    text_encoder_kind: TextEncoderKind = "auto"
    """auto, encoder (last hidden state) or decoder (LLM hidden state of text_layer)."""
    text_layer: int = -1
    """Hidden-state layer for decoder LLMs (-1 = last)."""
    max_text_tokens: PosInt = 64
    """The text encoder's window (tokens, special tokens included)."""
    long_text: LongText = "chunks"
    """Descriptions longer than one window: ``chunks`` (read in overlapping windows, token
    features concatenated up to ``max_text_chunks`` windows; the whole text conditions) or
    ``cut`` (only the first window, the behaviour of models made before)."""
    text_chunk_overlap: NonNegInt = 16
    """Tokens each window repeats from the one before (``long_text: chunks``)."""
    max_text_chunks: PosInt = 8
    """Cap on the windows per description (8 windows of 64 tokens = 386 tokens with MiniLM)."""
    p_drop_class: Probability = 0.1
    """Probability of replacing the class by the null class (classifier-free guidance)."""
    p_drop_text: Probability = 0.1
    """Probability (independent of the class) of replacing the text by the null text."""
    class_loss_weight: NonNegFloat = 0.1
    """Weight of CCELLA's class-prediction cross-entropy added to the denoising MSE (0 = off)."""
    ccella: bool = False
    """CCELLA mode: a head predicts the class from the text; the denoiser gets the predicted
    class probabilities (one-hot where there is no text); the loss adds ccella_loss_weight x
    the head's class loss. Needs descriptions (--store)."""
    ccella_loss: CcellaLoss = "focal"
    """CCELLA mode class loss: focal (gamma 2, as CCELLA) or ce (cross-entropy)."""
    ccella_loss_weight: NonNegFloat = 0.1
    """CCELLA mode: weight of the text head's class loss."""
    ccella_temperature: PosFloat = 1.0
    """CCELLA mode: the denoiser gets softmax(logits / temperature)."""
    prototypes_per_class: PosInt = 64
    """Prototype Condition Mechanism: k-means prototypes per class (token embeddings)."""
    prototype_strength: Probability = 0.8
    """Default pull of test-time text tokens toward the class prototypes (0 = off, 1 = full)."""
    prototype_temperature: PosFloat = 0.01
    """Softmax temperature of the attention over prototypes (small = nearest prototype)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.text_chunk_overlap < self.max_text_tokens // 2:
            raise ValueError(f"text_chunk_overlap must be in [0, max_text_tokens / 2), got "
                             f"{self.text_chunk_overlap}")
        return self


class DiffusionSection(Section):
    """Diffusion."""

    noise_schedule: NoiseSchedule = "ddpm"
    """ddpm (diffusers DDPMScheduler: samplers dpmsolver++, ddim, ddpm, unipc) or rflow
    (rectified flow, MONAI RFlowScheduler: the network predicts x0 - noise; sampler rflow)."""
    num_train_timesteps: PosInt = 1000
    """Diffusion steps of the training noise schedule."""
    beta_schedule: BetaSchedule = "squaredcos_cap_v2"
    """diffusers beta schedule: linear, scaled_linear or squaredcos_cap_v2."""
    prediction_type: PredictionType = "epsilon"
    """What the UNet predicts: epsilon, v_prediction or sample."""
    snr_gamma: PosFloat | None = None
    """Min-SNR-gamma loss weighting (Hang et al. 2023; 5.0 is typical): faster convergence. None = off."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.noise_schedule == "rflow" and self.snr_gamma is not None:
            raise ValueError("snr_gamma (Min-SNR weighting) is for DDPM noise; set it to null "
                             "with noise_schedule: rflow")
        return self


class OptimSection(Section):
    """Optimisation."""

    max_steps: PosInt = 2000
    """Optimizer steps in total (a resumed run continues up to this)."""
    batch_size: PosInt = 16
    """Images per step per process (before gradient accumulation)."""
    grad_accum: PosInt = 1
    """Gradient accumulation steps (effective batch = batch_size * grad_accum * processes)."""
    lr: PosFloat = 2e-4
    """Peak learning rate (AdamW)."""
    lr_schedule: LrSchedule = "cosine"
    """cosine or constant (both after a linear warm-up)."""
    warmup_steps: NonNegInt = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    ema_decay: Annotated[float, Field(gt=0, lt=1)] = 0.999
    """EMA decay (with diffusers' EMA warm-up, so early EMA weights follow the model)."""
    mixed_precision: MixedPrecision = "auto"
    """auto (bf16 on a bf16 GPU, fp16 on other GPUs, none on CPU), no, fp16, bf16 (also CPU)."""
    seed: int = 0
    """Seed of everything (init, batches, noise, dropout); runs are reproducible."""
    num_threads: PosInt | None = None
    """CPU threads for torch (None = torch default)."""
    channels_last: bool = True
    """Channels-last memory format for the UNet and its inputs: faster convolutions (measured
    on CPU: +5 % on the recipe UNet, +16 % fp32 and +45 % with bf16 on a 7M UNet, see
    benchmarks/train_flops.py); the saved weights are ordinary contiguous tensors."""


class GpuSection(Section):
    """GPU / multi-process levers (all off by default: not yet measured on a GPU)."""

    data_cache: DataCache = "auto"
    """Where the decoded training images live: memory, disk (a memory-mapped stack in
    $MEDSYNTH_CACHE shared by the ranks and later runs; resident memory does not grow with the
    data) or auto (disk when the stack would take over a quarter of the available memory)."""
    tf32: bool = False
    """Allow TF32 matmuls and convolutions in the fp32 paths on Ampere+ GPUs (no effect on CPU)."""
    sdpa_attention: bool = False
    """MONAI denoisers: attention through torch's scaled_dot_product_attention (flash/efficient
    kernels on a GPU) instead of MONAI's einsum softmax; same weights, same saved model."""
    ema_foreach: bool = False
    """diffusers EMAModel(foreach=True): one fused update over all parameters per step."""
    fused_optimizer: bool = False
    """torch's fused AdamW kernel (CPU and GPU): the same update in one pass over all parameters;
    float-level differences only (about 3e-7 in the weights after 15 steps). Measured on the CPU
    recipe UNet: about +5 % per step (benchmarks/train_speed.py)."""
    process_group_timeout_s: PosInt | None = None
    """Timeout of the process group under accelerate launch (None = torch's default, 10 min on
    NCCL); raise it when a rank waits long for the main one (sample grids, the latent cache)."""
    sample_batch_size: PosInt | None = None
    """Images per sampler call for the sample grids (None = batch_size): a grid larger than a
    training batch is drawn in chunks instead of one out-of-memory batch."""
    compile: bool = False
    """torch.compile the denoiser for training (one compile at the first step; same weights and
    checkpoints). Off: no measured gain on CPU (docs/train.md), not yet measured on a GPU."""
    prefetch: bool = False
    """Draw the next micro-batch on a worker thread while the current one trains, into pinned
    memory on a GPU, copied with non_blocking=True (same batches; medsynth/train/batches.py)."""


class BookkeepingSection(Section):
    """Bookkeeping."""

    checkpoint_every: PosInt = 500
    """Write a resumable checkpoint every N steps (and at the end)."""
    keep_checkpoints: PosInt = 2
    """Keep the newest N checkpoints."""
    log_every: PosInt = 10
    """Write a train_log.csv row every N steps."""
    sample_every: NonNegInt = 1000
    """Write a per-class sample grid every N steps (and at the end); 0 = only at the end."""
    sample_per_class: PosInt = 4
    """Samples per class in a grid."""
    sample_steps: PosInt = 30
    """DDIM steps for grid samples."""
    sample_guidance: float = 2.0
    """Classifier-free guidance scale for grid samples."""


class TrainConfig(Recipe):
    """Recipe of ``medsynth train`` (YAML keys = flat field names; CLI options override them)."""

    error_prefix: ClassVar[str] = "train config"
    sections: ClassVar[tuple[str, ...]] = ("data", "prior", "network", "ae", "conditioning",
                                           "diffusion", "optim", "gpu", "log")

    data: DataSection = Field(default_factory=DataSection)
    prior: PriorSection = Field(default_factory=PriorSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    ae: AutoencoderSection = Field(default_factory=AutoencoderSection)
    conditioning: ConditioningSection = Field(default_factory=ConditioningSection)
    diffusion: DiffusionSection = Field(default_factory=DiffusionSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    gpu: GpuSection = Field(default_factory=GpuSection)
    log: BookkeepingSection = Field(default_factory=BookkeepingSection)

    @classmethod
    def tiny(cls, **changes: Any) -> TrainConfig:
        """A seconds-long recipe for tests of later stages: tiny UNet, 2 steps."""
        base: dict[str, Any] = dict(
            block_out_channels=[8, 16], attention_levels=[False, True], norm_num_groups=4,
            attention_head_dim=8, max_steps=2, batch_size=4, warmup_steps=0, checkpoint_every=2,
            sample_every=0, sample_per_class=1, sample_steps=2, log_every=1,
            prototypes_per_class=4)
        base.update(changes)
        return cls(**base)
