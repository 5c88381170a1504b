"""The refine recipe: a pydantic model, loaded from / saved to YAML, validated on creation."""

from __future__ import annotations

from typing import Annotated, ClassVar, Self

from pydantic import Field, model_validator

from medsynth.choices import Pairing, RefineAdapter, RefineMethod, Sampler, values
from medsynth.recipe import Recipe

METHODS = values(RefineMethod)
ADAPTERS = values(RefineAdapter)
PAIRINGS = values(Pairing)
#: Fields that may change when a run is resumed (everything else must match the saved recipe).
RESUMABLE_CHANGES = ("steps", "rounds", "checkpoint_every", "keep_checkpoints", "log_every",
                     "num_threads", "batch_size_sampling")

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class RefineConfig(Recipe):
    """Recipe of ``medsynth refine`` (YAML keys = field names; CLI options override them)."""

    error_prefix: ClassVar[str] = "refine config"

    # --- method -----------------------------------------------------------------------------
    method: RefineMethod = "dpo"
    """dpo (Diffusion-DPO on winner/loser pairs) or rwr (reward-weighted fine-tuning on the
    accepted samples plus real training images, a baseline)."""
    adapter: RefineAdapter = "lora"
    """lora (a peft LoRA adapter on the denoiser's attention projections; the DPO reference is
    the same network with the adapter disabled) or full (every weight trained; the reference is
    a frozen copy: only sensible for the small CPU networks)."""
    rank: PosInt = 8
    """LoRA rank r."""
    lora_alpha: PosFloat | None = None
    """LoRA scale numerator alpha (the update is scaled by alpha / r); None = r (scale 1)."""
    beta: PosFloat = 1000.0
    """DPO inverse temperature: loss = -log sigmoid(beta * (ref_diff - model_diff)) with
    per-sample losses averaged over pixels (diffusers uses 2500 for SD1.5 latents)."""
    # --- optimisation -----------------------------------------------------------------------
    steps: PosInt = 300
    """Optimizer steps per round."""
    batch_size: PosInt = 8
    """Pairs per step (dpo; each pair is a winner and a loser) or images per step (rwr)."""
    lr: PosFloat = 1e-4
    """Peak learning rate (AdamW), after a linear warm-up; constant afterwards."""
    warmup_steps: NonNegInt = 10
    """Linear warm-up steps (each round)."""
    weight_decay: NonNegFloat = 0.0
    """AdamW weight decay."""
    max_grad_norm: NonNegFloat = 1.0
    """Gradient clipping norm (0 = off)."""
    seed: int = 0
    """Seed of everything: pair order, noise, timesteps, round sampling."""
    # --- pairs (MAGIC) ----------------------------------------------------------------------
    bad_score: Probability = 0.4
    """A pair whose two scores are both <= this is "both bad" and gives no signal (MAGIC: at
    most 2 of 5 criteria met)."""
    tie_margin: NonNegFloat = 0.0
    """Scores closer than or equal to this are a tie (no signal); 0 = only equal scores."""
    pairing: Pairing = "all"
    """Pairs within a group of images with the same class and description: all (every
    informative pair) or extremes (the best image against the worst one)."""
    max_pairs: NonNegInt = 0
    """Keep at most this many pairs (a seeded random subset); 0 = all."""
    # --- early stopping (dpo) ---------------------------------------------------------------
    early_stop: bool = True
    """Stop when the winners' denoising loss rises above the reference's (the model then "wins"
    by making the losers worse) and keep the weights of the last window where it had not."""
    early_stop_min_steps: NonNegInt = 50
    """Never stop before this many steps of a round."""
    early_stop_patience: PosInt = 3
    """Log windows in a row with the winners' loss above the reference's before stopping."""
    # --- rwr --------------------------------------------------------------------------------
    accept_score: Probability = 0.6
    """rwr: synthetic images with a score >= this (and a valid image) are accepted."""
    reward_temperature: PosFloat = 0.25
    """rwr: an accepted image weighs exp((score - 1) / T), normalised to mean 1."""
    real_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """rwr: share of each batch taken from the real training images the model trained on
    (0 = synthetic only)."""
    # --- rounds (on-policy) -----------------------------------------------------------------
    rounds: PosInt = 1
    """Rounds of train (round 1, on the given judged set) and sample -> judge -> train (rounds
    2..R, on images the current model makes)."""
    round_descriptions: PosInt = 8
    """Per class and round >= 2: descriptions drawn from the judged set's descriptions."""
    round_candidates: PosInt = 4
    """Images per description and round (the group that pairs are built from)."""
    sampler: Sampler | None = None
    """Sampler of rounds >= 2; None = the judged set's."""
    sampling_steps: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Denoising steps of rounds >= 2; None = the judged set's."""
    guidance: NonNegFloat | None = None
    """Guidance scale of rounds >= 2; None = the judged set's."""
    batch_size_sampling: PosInt = 16
    """Images denoised together when sampling a round."""
    # --- bookkeeping ------------------------------------------------------------------------
    checkpoint_every: PosInt = 50
    """Write a resumable checkpoint every N steps (and at the end of a round)."""
    keep_checkpoints: PosInt = 2
    """Keep the newest N checkpoints of a round."""
    log_every: PosInt = 10
    """Write a refine_log.csv row every N steps (also the early-stopping window)."""
    num_threads: PosInt | None = None
    """CPU threads for torch (None = the free cores now)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.round_candidates < 2 and self.rounds > 1 and self.method == "dpo":
            raise ValueError("round_candidates must be >= 2 for dpo rounds (pairs need two images "
                             "of one description)")
        return self

    @property
    def alpha(self) -> float:
        """The LoRA alpha in use."""
        return float(self.lora_alpha if self.lora_alpha is not None else self.rank)

