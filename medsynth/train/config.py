"""The training recipe: a typed dataclass, loaded from / saved to YAML, validated on creation."""

from __future__ import annotations

import dataclasses
from typing import Any

from medsynth.errors import BadUsageError
from medsynth.models.denoiser import DENOISER_KINDS
from medsynth.recipe import Recipe

#: Fields that may change when a run is resumed (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                     "sample_every", "sample_per_class", "sample_steps", "sample_guidance",
                     "num_threads", "channels_last", "ae_max_steps", "ae_checkpoint_every",
                     "ae_log_every", "tf32", "sdpa_attention", "ema_foreach",
                     "process_group_timeout_s", "sample_batch_size", "data_cache",
                     "compile", "prefetch")
NOISE_SCHEDULES = ("ddpm", "rflow")


@dataclasses.dataclass
class TrainConfig(Recipe):
    """Recipe of ``medsynth train`` (YAML keys = field names; CLI options override them)."""

    # --- data -------------------------------------------------------------------------------
    size: int | None = None
    """Square (2D) or cubic (3D) training size in pixels; None = the data's own size (images
    must then all match)."""
    shape: list[int] | None = None
    """Spatial training shape ``[H, W]`` or ``[D, H, W]`` (overrides size; volumes resized
    trilinearly, spacing follows). None = size, or the data's own shape."""
    spatial_dims: int | None = None
    """2 (images) or 3 (volumes): what the recipe is for; a dataset of the other kind is refused.
    None = whatever the data are."""
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Dataset splits to train on. Evaluate refuses models that saw the test split."""
    classes: list[str] | None = None
    """Train on these classes only (None = all classes of the dataset)."""
    hflip: str = "auto"
    """Horizontal flips: auto (only for modalities without left/right meaning: XC, SM, GM, ES), yes, no."""
    vflip: str = "auto"
    """Vertical flips: auto (only dermoscopy/microscopy: XC, SM, GM), yes, no."""
    # --- pretrained prior (docs/priors.md) --------------------------------------------------
    init: str | None = None
    """Start from a pretrained prior instead of random weights: a medsynth model folder (train
    or refine stage; classes matched by name), a diffusers Stable Diffusion pipeline folder or a
    hub id already in the local Hugging Face cache (its VAE, UNet, scheduler and CLIP), or a
    MONAI bundle / MAISI autoencoder folder (the frozen autoencoder of a latent run). The
    network, text encoder and noise schedule come from it. CLI: --init."""
    init_text: str = "pipeline"
    """Stable Diffusion init: ``pipeline`` (its CLIP text encoder, 77 tokens) or ``own`` (the
    recipe's text_encoder through a learnt projection to the UNet's cross-attention width)."""
    adapter: str = "full"
    """How an init is adapted: ``full`` (every weight trains) or ``lora`` (peft LoRA on the
    attention projections, the class embedding trained in full beside it; needs init)."""
    lora_rank: int = 8
    """LoRA rank r (adapter: lora)."""
    lora_alpha: float | None = None
    """LoRA scale numerator (update scaled by alpha / r); None = lora_rank."""
    lora_targets: list[str] | None = None
    """LoRA target modules; None = the denoiser's attention projections (to_q, to_k, to_v,
    to_out.0 for the diffusers UNet)."""
    # --- network ----------------------------------------------------------------------------
    denoiser: str = "auto"
    """Denoising network: auto (diffusers for 2D, monai for 3D), diffusers (UNet2DConditionModel,
    2D only, loadable with plain diffusers) or monai (DiffusionModelUNet, 2D or 3D)."""
    block_out_channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 64])
    """UNet channels per resolution level."""
    attention_levels: list[bool] = dataclasses.field(default_factory=lambda: [False, True, True])
    """Cross-attention (text) per level; the mid block always attends."""
    layers_per_block: int = 1
    """ResNet layers per level."""
    attention_head_dim: int = 8
    """Channels per attention head."""
    norm_num_groups: int = 8
    """GroupNorm groups (must divide every block_out_channels entry)."""
    # --- latent diffusion (autoencoder phase) ----------------------------------------------
    latent: bool = False
    """Latent diffusion: first train a MONAI AutoencoderKL (the ae_* keys), cache the latents of
    the training images, then train the denoiser on them (docs/train.md)."""
    autoencoder: str | None = None
    """Reuse this trained autoencoder (its folder, or a latent model folder) instead of training
    one; implies latent. CLI: --autoencoder."""
    ae_block_out_channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 64])
    """Autoencoder channels per level; latents are 2^(levels-1) times smaller per axis."""
    ae_latent_channels: int = 4
    """Latent channels."""
    ae_layers_per_block: int = 1
    """Autoencoder residual blocks per level."""
    ae_norm_num_groups: int = 16
    """Autoencoder GroupNorm groups (must divide every ae_block_out_channels entry)."""
    ae_attention: bool = False
    """Non-local attention in the autoencoder's deepest level (2D only; refused in 3D)."""
    ae_patch_size: list[int] | None = None
    """Train the autoencoder on random patches of this spatial shape (one entry = cubic/square);
    None = whole images. Use patches where the volumes are large."""
    ae_max_steps: int = 1000
    """Autoencoder optimizer steps."""
    ae_batch_size: int = 4
    """Autoencoder patches per step."""
    ae_lr: float = 2e-4
    """Autoencoder learning rate (Adam; the discriminator's too)."""
    ae_warmup_steps: int = 50
    """Autoencoder linear warm-up steps (then constant, or cosine decay)."""
    ae_lr_schedule: str = "constant"
    """Autoencoder learning-rate schedule after warm-up: constant or cosine (decays to 0 at
    ae_max_steps: lower loss in a short run)."""
    ae_kl_weight: float = 1e-6
    """Weight of the KL term (L1 + kl_weight * KL [+ adversarial + perceptual])."""
    ae_adv_weight: float = 0.0
    """Weight of the PatchDiscriminator least-squares adversarial loss (0 = off)."""
    ae_adv_start: int = 0
    """Autoencoder step at which the adversarial loss starts (the discriminator trains from it)."""
    ae_perceptual_weight: float = 0.0
    """Weight of a perceptual loss (0 = off). Needs local weights: ae_perceptual_weights."""
    ae_perceptual_weights: str | None = None
    """Local ResNet-50 state dict (torchvision layout) for MONAI's PerceptualLoss: nothing is
    downloaded; required when ae_perceptual_weight > 0."""
    ae_checkpoint_every: int = 250
    """Autoencoder checkpoint every N steps (and at the end of the phase)."""
    ae_log_every: int = 10
    """Write an autoencoder_log.csv row every N steps."""
    # --- conditioning -----------------------------------------------------------------------
    text_encoder: str = "all-MiniLM-L6-v2"
    """Text encoder: the packaged all-MiniLM-L6-v2 (default), or a transformers folder/name."""
    text_encoder_kind: str = "auto"
    """auto, encoder (last hidden state) or decoder (LLM hidden state of text_layer)."""
    text_layer: int = -1
    """Hidden-state layer for decoder LLMs (-1 = last)."""
    max_text_tokens: int = 64
    """The text encoder's window (tokens, special tokens included)."""
    long_text: str = "chunks"
    """Descriptions longer than one window: ``chunks`` (read in overlapping windows, token
    features concatenated up to ``max_text_chunks`` windows; the whole text conditions) or
    ``cut`` (only the first window, the behaviour of models made before)."""
    text_chunk_overlap: int = 16
    """Tokens each window repeats from the one before (``long_text: chunks``)."""
    max_text_chunks: int = 8
    """Cap on the windows per description (8 windows of 64 tokens = 386 tokens with MiniLM)."""
    p_drop_class: float = 0.1
    """Probability of replacing the class by the null class (classifier-free guidance)."""
    p_drop_text: float = 0.1
    """Probability (independent of the class) of replacing the text by the null text."""
    class_loss_weight: float = 0.1
    """Weight of CCELLA's class-prediction cross-entropy added to the denoising MSE (0 = off)."""
    ccella: bool = False
    """CCELLA mode: a head predicts the class from the text; the denoiser gets the predicted
    class probabilities (one-hot where there is no text); the loss adds ccella_loss_weight x
    the head's class loss. Needs descriptions (--store)."""
    ccella_loss: str = "focal"
    """CCELLA mode class loss: focal (gamma 2, as CCELLA) or ce (cross-entropy)."""
    ccella_loss_weight: float = 0.1
    """CCELLA mode: weight of the text head's class loss."""
    ccella_temperature: float = 1.0
    """CCELLA mode: the denoiser gets softmax(logits / temperature)."""
    prototypes_per_class: int = 64
    """Prototype Condition Mechanism: k-means prototypes per class (token embeddings)."""
    prototype_strength: float = 0.8
    """Default pull of test-time text tokens toward the class prototypes (0 = off, 1 = full)."""
    prototype_temperature: float = 0.01
    """Softmax temperature of the attention over prototypes (small = nearest prototype)."""
    # --- diffusion --------------------------------------------------------------------------
    noise_schedule: str = "ddpm"
    """ddpm (diffusers DDPMScheduler: samplers dpmsolver++, ddim, ddpm, unipc) or rflow
    (rectified flow, MONAI RFlowScheduler: the network predicts x0 - noise; sampler rflow)."""
    num_train_timesteps: int = 1000
    """Diffusion steps of the training noise schedule."""
    beta_schedule: str = "squaredcos_cap_v2"
    """diffusers beta schedule: linear, scaled_linear or squaredcos_cap_v2."""
    prediction_type: str = "epsilon"
    """What the UNet predicts: epsilon, v_prediction or sample."""
    snr_gamma: float | None = None
    """Min-SNR-gamma loss weighting (Hang et al. 2023; 5.0 is typical): faster convergence. None = off."""
    # --- optimisation -----------------------------------------------------------------------
    max_steps: int = 2000
    """Optimizer steps in total (a resumed run continues up to this)."""
    batch_size: int = 16
    """Images per step per process (before gradient accumulation)."""
    grad_accum: int = 1
    """Gradient accumulation steps (effective batch = batch_size * grad_accum * processes)."""
    lr: float = 2e-4
    """Peak learning rate (AdamW)."""
    lr_schedule: str = "cosine"
    """cosine or constant (both after a linear warm-up)."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    ema_decay: float = 0.999
    """EMA decay (with diffusers' EMA warm-up, so early EMA weights follow the model)."""
    mixed_precision: str = "auto"
    """auto (bf16 on a bf16 GPU, fp16 on other GPUs, none on CPU), no, fp16, bf16 (also CPU)."""
    seed: int = 0
    """Seed of everything (init, batches, noise, dropout); runs are reproducible."""
    num_threads: int | None = None
    """CPU threads for torch (None = torch default)."""
    channels_last: bool = True
    """Channels-last memory format for the UNet and its inputs: faster convolutions (measured
    on CPU: +5 % on the recipe UNet, +16 % fp32 and +45 % with bf16 on a 7M UNet, see
    benchmarks/train_flops.py); the saved weights are ordinary contiguous tensors."""
    # --- GPU / multi-process levers (all off by default: not yet measured on a GPU) ----------
    data_cache: str = "auto"
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
    process_group_timeout_s: int | None = None
    """Timeout of the process group under accelerate launch (None = torch's default, 10 min on
    NCCL); raise it when a rank waits long for the main one (sample grids, the latent cache)."""
    sample_batch_size: int | None = None
    """Images per sampler call for the sample grids (None = batch_size): a grid larger than a
    training batch is drawn in chunks instead of one out-of-memory batch."""
    compile: bool = False
    """torch.compile the denoiser for training (one compile at the first step; same weights and
    checkpoints). Off: no measured gain on CPU (docs/train.md), not yet measured on a GPU."""
    prefetch: bool = False
    """Draw the next micro-batch on a worker thread while the current one trains, into pinned
    memory on a GPU, copied with non_blocking=True (same batches; medsynth/train/batches.py)."""
    # --- bookkeeping ------------------------------------------------------------------------
    checkpoint_every: int = 500
    """Write a resumable checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """Keep the newest N checkpoints."""
    log_every: int = 10
    """Write a train_log.csv row every N steps."""
    sample_every: int = 1000
    """Write a per-class sample grid every N steps (and at the end); 0 = only at the end."""
    sample_per_class: int = 4
    """Samples per class in a grid."""
    sample_steps: int = 30
    """DDIM steps for grid samples."""
    sample_guidance: float = 2.0
    """Classifier-free guidance scale for grid samples."""

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise BadUsageError(f"train config: {msg}")

        if self.denoiser not in ("auto", *DENOISER_KINDS):
            bad(f"denoiser must be auto, {' or '.join(DENOISER_KINDS)}, got {self.denoiser!r}")
        if self.autoencoder:
            self.latent = True
        if self.init_text not in ("pipeline", "own"):
            bad(f"init_text must be pipeline or own, got {self.init_text!r}")
        if self.adapter not in ("full", "lora"):
            bad(f"adapter must be full or lora, got {self.adapter!r}")
        if self.lora_rank < 1:
            bad(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            bad(f"lora_alpha must be > 0 (or null = lora_rank), got {self.lora_alpha}")
        if self.adapter == "lora" and not self.init:
            bad("adapter: lora adapts a pretrained prior; set init (--init SOURCE) or use "
                "adapter: full")
        if self.spatial_dims is not None and self.spatial_dims not in (2, 3):
            bad(f"spatial_dims must be 2 or 3 (or null), got {self.spatial_dims}")
        if self.shape is not None:
            if len(self.shape) not in (2, 3) or min(self.shape) < 8:
                bad(f"shape must be [H, W] or [D, H, W] with every entry >= 8, got {self.shape}")
            if self.spatial_dims is not None and len(self.shape) != self.spatial_dims:
                bad(f"shape {self.shape} has {len(self.shape)} axes but spatial_dims is "
                    f"{self.spatial_dims}")
        if self.ae_patch_size is not None and (len(self.ae_patch_size) not in (1, 2, 3)
                                               or min(self.ae_patch_size) < 4):
            bad(f"ae_patch_size must have 1 to 3 entries >= 4, got {self.ae_patch_size}")
        if any(c <= 0 or c % self.ae_norm_num_groups for c in self.ae_block_out_channels):
            bad(f"ae_norm_num_groups={self.ae_norm_num_groups} must divide ae_block_out_channels "
                f"{self.ae_block_out_channels}")
        for name in ("ae_kl_weight", "ae_adv_weight", "ae_perceptual_weight", "ae_adv_start",
                     "ae_warmup_steps", "ccella_loss_weight"):
            if getattr(self, name) < 0:
                bad(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ae_perceptual_weight > 0 and not self.ae_perceptual_weights:
            bad("ae_perceptual_weight > 0 needs ae_perceptual_weights: a local ResNet-50 state "
                "dict (MONAI's PerceptualLoss would otherwise download weights); or set "
                "ae_perceptual_weight: 0")
        if self.ae_lr <= 0:
            bad("ae_lr must be > 0")
        if self.ae_lr_schedule not in ("cosine", "constant"):
            bad(f"ae_lr_schedule must be cosine or constant, got {self.ae_lr_schedule!r}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            bad(f"noise_schedule must be {' or '.join(NOISE_SCHEDULES)}, got "
                f"{self.noise_schedule!r}")
        if self.noise_schedule == "rflow" and self.snr_gamma is not None:
            bad("snr_gamma (Min-SNR weighting) is for DDPM noise; set it to null with "
                "noise_schedule: rflow")
        if self.ccella_loss not in ("focal", "ce"):
            bad(f"ccella_loss must be focal or ce, got {self.ccella_loss!r}")
        if self.ccella_temperature <= 0:
            bad("ccella_temperature must be > 0")
        if self.size is not None and self.size < 8:
            bad(f"size must be >= 8, got {self.size}")
        if not self.splits:
            bad("splits must not be empty")
        for name in ("hflip", "vflip"):
            if getattr(self, name) not in ("auto", "yes", "no"):
                bad(f"{name} must be auto, yes or no, got {getattr(self, name)!r}")
        if len(self.attention_levels) != len(self.block_out_channels):
            bad("attention_levels needs one entry per block_out_channels level")
        if any(c <= 0 or c % self.norm_num_groups for c in self.block_out_channels):
            bad(f"norm_num_groups={self.norm_num_groups} must divide block_out_channels {self.block_out_channels}")
        for name in ("p_drop_class", "p_drop_text", "prototype_strength"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                bad(f"{name} must be in [0, 1], got {v}")
        if self.prototype_temperature <= 0:
            bad("prototype_temperature must be > 0")
        if self.class_loss_weight < 0:
            bad("class_loss_weight must be >= 0")
        if self.text_encoder_kind not in ("auto", "encoder", "decoder", "clip"):
            bad("text_encoder_kind must be auto, encoder, decoder or clip, got "
                f"{self.text_encoder_kind!r}")
        if self.long_text not in ("chunks", "cut"):
            bad(f"long_text must be chunks or cut, got {self.long_text!r}")
        if not 0 <= self.text_chunk_overlap < self.max_text_tokens // 2:
            bad(f"text_chunk_overlap must be in [0, max_text_tokens / 2), got "
                f"{self.text_chunk_overlap}")
        if self.max_text_chunks < 1:
            bad(f"max_text_chunks must be >= 1, got {self.max_text_chunks}")
        if self.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            bad(f"unknown beta_schedule {self.beta_schedule!r}")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            bad(f"unknown prediction_type {self.prediction_type!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            bad(f"lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            bad(f"mixed_precision must be auto, no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints",
                     "log_every", "sample_per_class", "sample_steps", "prototypes_per_class",
                     "max_text_tokens", "num_train_timesteps", "layers_per_block",
                     "ae_max_steps", "ae_batch_size", "ae_checkpoint_every", "ae_log_every",
                     "ae_latent_channels", "ae_layers_per_block"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.sample_every < 0:
            bad("warmup_steps and sample_every must be >= 0")
        if not 0.0 < self.ema_decay < 1.0:
            bad(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.lr <= 0:
            bad("lr must be > 0")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            bad("snr_gamma must be > 0 (or null = off)")
        if self.data_cache not in ("auto", "memory", "disk"):
            bad(f"data_cache must be auto, memory or disk, got {self.data_cache!r}")
        if self.process_group_timeout_s is not None and self.process_group_timeout_s < 1:
            bad("process_group_timeout_s must be >= 1 (or null = torch's default)")
        if self.sample_batch_size is not None and self.sample_batch_size < 1:
            bad("sample_batch_size must be >= 1 (or null = batch_size)")

    @classmethod
    def tiny(cls, **changes: Any) -> TrainConfig:
        """A seconds-long recipe for tests of later stages: tiny UNet, 2 steps."""
        base = dict(block_out_channels=[8, 16], attention_levels=[False, True], norm_num_groups=4,
                    attention_head_dim=8, max_steps=2, batch_size=4, warmup_steps=0,
                    checkpoint_every=2, sample_every=0, sample_per_class=1, sample_steps=2,
                    log_every=1, prototypes_per_class=4)
        base.update(changes)
        return cls(**base)

