"""The refine recipe: a typed dataclass, loaded from / saved to YAML, validated on creation."""

from __future__ import annotations

import dataclasses

from medsynth.errors import BadUsageError
from medsynth.models.sampler import SAMPLERS
from medsynth.recipe import Recipe

METHODS = ("dpo", "rwr")
ADAPTERS = ("lora", "full")
PAIRINGS = ("all", "extremes")
#: Fields that may change when a run is resumed (everything else must match the saved recipe).
RESUMABLE_CHANGES = ("steps", "rounds", "checkpoint_every", "keep_checkpoints", "log_every",
                     "num_threads", "batch_size_sampling")


@dataclasses.dataclass
class RefineConfig(Recipe):
    """Recipe of ``medsynth refine`` (YAML keys = field names; CLI options override them)."""

    # --- method -----------------------------------------------------------------------------
    method: str = "dpo"
    """dpo (Diffusion-DPO on winner/loser pairs) or rwr (reward-weighted fine-tuning on the
    accepted samples plus real training images, a baseline)."""
    adapter: str = "lora"
    """lora (a peft LoRA adapter on the denoiser's attention projections; the DPO reference is
    the same network with the adapter disabled) or full (every weight trained; the reference is
    a frozen copy: only sensible for the small CPU networks)."""
    rank: int = 8
    """LoRA rank r."""
    lora_alpha: float | None = None
    """LoRA scale numerator alpha (the update is scaled by alpha / r); None = r (scale 1)."""
    beta: float = 1000.0
    """DPO inverse temperature: loss = -log sigmoid(beta * (ref_diff - model_diff)) with
    per-sample losses averaged over pixels (diffusers uses 2500 for SD1.5 latents)."""
    # --- optimisation -----------------------------------------------------------------------
    steps: int = 300
    """Optimizer steps per round."""
    batch_size: int = 8
    """Pairs per step (dpo; each pair is a winner and a loser) or images per step (rwr)."""
    lr: float = 1e-4
    """Peak learning rate (AdamW), after a linear warm-up; constant afterwards."""
    warmup_steps: int = 10
    """Linear warm-up steps (each round)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    seed: int = 0
    """Seed of everything: pair order, noise, timesteps, round sampling."""
    # --- pairs (MAGIC) ----------------------------------------------------------------------
    bad_score: float = 0.4
    """A pair whose two scores are both <= this is "both bad" and gives no signal (MAGIC: at
    most 2 of 5 criteria met)."""
    tie_margin: float = 0.0
    """Scores closer than or equal to this are a tie (no signal); 0 = only equal scores."""
    pairing: str = "all"
    """Pairs within a group of images with the same class and description: all (every
    informative pair) or extremes (the best image against the worst one)."""
    max_pairs: int = 0
    """Keep at most this many pairs (a seeded random subset); 0 = all."""
    # --- early stopping (dpo) ---------------------------------------------------------------
    early_stop: bool = True
    """Stop when the winners' denoising loss rises above the reference's (the model then "wins"
    by making the losers worse) and keep the weights of the last window where it had not."""
    early_stop_min_steps: int = 50
    """Never stop before this many steps of a round."""
    early_stop_patience: int = 3
    """Log windows in a row with the winners' loss above the reference's before stopping."""
    # --- rwr --------------------------------------------------------------------------------
    accept_score: float = 0.6
    """rwr: synthetic images with a score >= this (and a valid image) are accepted."""
    reward_temperature: float = 0.25
    """rwr: an accepted image weighs exp((score - 1) / T), normalised to mean 1."""
    real_fraction: float = 0.5
    """rwr: share of each batch taken from the real training images the model trained on
    (0 = synthetic only)."""
    # --- rounds (on-policy) -----------------------------------------------------------------
    rounds: int = 1
    """Rounds of train (round 1, on the given judged set) and sample -> judge -> train (rounds
    2..R, on images the current model makes)."""
    round_descriptions: int = 8
    """Per class and round >= 2: descriptions drawn from the judged set's descriptions."""
    round_candidates: int = 4
    """Images per description and round (the group that pairs are built from)."""
    sampler: str | None = None
    """Sampler of rounds >= 2; None = the judged set's."""
    sampling_steps: int | None = None
    """Denoising steps of rounds >= 2; None = the judged set's."""
    guidance: float | None = None
    """Guidance scale of rounds >= 2; None = the judged set's."""
    batch_size_sampling: int = 16
    """Images denoised together when sampling a round."""
    # --- bookkeeping ------------------------------------------------------------------------
    checkpoint_every: int = 50
    """Write a resumable checkpoint every N steps (and at the end of a round)."""
    keep_checkpoints: int = 2
    """Keep the newest N checkpoints of a round."""
    log_every: int = 10
    """Write a refine_log.csv row every N steps (also the early-stopping window)."""
    num_threads: int | None = None
    """CPU threads for torch (None = the free cores now)."""

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise BadUsageError(f"refine config: {msg}")

        if self.method not in METHODS:
            bad(f"method must be {' or '.join(METHODS)}, got {self.method!r}")
        if self.adapter not in ADAPTERS:
            bad(f"adapter must be {' or '.join(ADAPTERS)}, got {self.adapter!r}")
        if self.pairing not in PAIRINGS:
            bad(f"pairing must be {' or '.join(PAIRINGS)}, got {self.pairing!r}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            bad(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        for name in ("rank", "steps", "batch_size", "rounds", "round_descriptions",
                     "round_candidates", "checkpoint_every", "keep_checkpoints", "log_every",
                     "early_stop_patience", "batch_size_sampling"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "max_pairs", "early_stop_min_steps", "weight_decay",
                     "max_grad_norm", "tie_margin"):
            if getattr(self, name) < 0:
                bad(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("bad_score", "accept_score", "real_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.real_fraction >= 1.0:
            bad("real_fraction must be < 1 (some of each batch must be synthetic)")
        if self.beta <= 0 or self.lr <= 0 or self.reward_temperature <= 0:
            bad("beta, lr and reward_temperature must be > 0")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            bad("lora_alpha must be > 0 (or null = rank)")
        if self.round_candidates < 2 and self.rounds > 1 and self.method == "dpo":
            bad("round_candidates must be >= 2 for dpo rounds (pairs need two images of one "
                "description)")
        if self.sampling_steps is not None and not 1 <= self.sampling_steps <= 1000:
            bad(f"sampling_steps must be in 1..1000, got {self.sampling_steps}")
        if self.guidance is not None and self.guidance < 0:
            bad(f"guidance must be >= 0, got {self.guidance}")
        if self.num_threads is not None and self.num_threads < 1:
            bad(f"num_threads must be >= 1, got {self.num_threads}")

    @property
    def alpha(self) -> float:
        """The LoRA alpha in use."""
        return float(self.lora_alpha if self.lora_alpha is not None else self.rank)

