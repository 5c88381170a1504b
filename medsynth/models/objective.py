"""The diffusion objective, in one place: what train's denoiser phase and refine's DPO and RWR
losses share.

* the noise schedule of a model kind: DDPM (diffusers ``DDPMScheduler``, epsilon / v / x0
  targets) or rectified flow (MONAI ``RFlowScheduler`` via :mod:`medsynth.models.rflow`, target
  the velocity ``x0 - noise``), built from a recipe (:meth:`Objective.for_training`) or from a
  model folder's scheduler config (:meth:`Objective.from_config`);
* the draws of one step from a seeded generator, in a fixed order (CFG dropout masks, then the
  noise, then the timesteps), so a resumed run draws what the uninterrupted one drew;
* noising, the target, and the per-sample loss with min-SNR-gamma weights (diffusers'
  ``compute_snr``; weights ``min(SNR, gamma) / SNR`` (eps), ``/ (SNR + 1)`` (v), ``/ 1`` (x0),
  as in diffusers' training examples).

A new model kind (schedule) is added here and every stage gets it, or is refused here
(:meth:`Objective.from_config`) with one line.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from medsynth.errors import MedsynthError

if TYPE_CHECKING:
    import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclasses.dataclass
class Objective:
    """A model kind's training objective (see module doc)."""

    scheduler: Any
    """The noise scheduler (diffusers ``DDPMScheduler`` or :class:`RectifiedFlowScheduler`)."""
    prediction_type: str
    """epsilon | v_prediction | sample; rectified flow: v_prediction (the flow velocity)."""
    rflow: bool = False
    snr_gamma: float | None = None
    """Min-SNR-gamma weighting (DDPM only); None = plain MSE."""

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config["num_train_timesteps"])

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def for_training(cls, *, noise_schedule: str, num_train_timesteps: int, beta_schedule: str,
                     prediction_type: str, sample_shape: tuple[int, ...],
                     snr_gamma: float | None = None) -> Objective:
        """The objective of a recipe (``noise_schedule`` ddpm | rflow) on ``(C, *spatial)``."""
        if noise_schedule == "rflow":
            from medsynth.models.rflow import RectifiedFlowScheduler, rflow_config

            return cls(RectifiedFlowScheduler(rflow_config(num_train_timesteps, sample_shape)),
                       "v_prediction", rflow=True, snr_gamma=None)
        from diffusers import DDPMScheduler

        return cls(DDPMScheduler(num_train_timesteps=num_train_timesteps,
                                 beta_schedule=beta_schedule, prediction_type=prediction_type),
                   prediction_type, snr_gamma=snr_gamma)

    @classmethod
    def from_config(cls, config: dict[str, Any], prediction_type: str, *, where: str = "model",
                    snr_gamma: float | None = None) -> Objective:
        """The objective of a saved model (its ``scheduler/scheduler_config.json``)."""
        from medsynth.models.rflow import RectifiedFlowScheduler, is_rflow

        if is_rflow(config):
            return cls(RectifiedFlowScheduler(dict(config)), "v_prediction", rflow=True)
        name = str(config.get("_class_name", "DDPMScheduler"))
        if name != "DDPMScheduler":
            raise MedsynthError(f"{where}: unknown training noise schedule {name!r} "
                                "(medsynth trains DDPMScheduler or RFlowScheduler models)")
        if prediction_type not in PREDICTION_TYPES:
            raise MedsynthError(f"{where}: unknown prediction type {prediction_type!r}")
        from diffusers import DDPMScheduler

        return cls(DDPMScheduler.from_config(config), prediction_type, snr_gamma=snr_gamma)

    # --- one step's draws ---------------------------------------------------------------------
    @staticmethod
    def cfg_dropout(b: int, g: torch.Generator, p_class: float, p_text: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier-free-guidance dropout masks ``(B,)`` bool: class, then text."""
        import torch

        drop_c = torch.rand(b, generator=g) < p_class
        drop_t = torch.rand(b, generator=g) < p_text
        return drop_c, drop_t

    def draw(self, shape: tuple[int, ...], g: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise of ``shape``, timesteps ``(B,)``) from ``g``: integer DDPM steps in [0, T),
        or continuous rectified-flow times in (0, T] (T is pure noise)."""
        import torch

        noise = torch.randn(tuple(shape), generator=g)
        b, n = int(shape[0]), self.num_train_timesteps
        if self.rflow:
            t = (1.0 - torch.rand(b, generator=g)) * n
        else:
            t = torch.randint(0, n, (b,), generator=g)
        return noise, t

    # --- noising, target, loss ----------------------------------------------------------------
    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to predict."""
        if self.rflow:
            return x0 - noise
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, t)
        return x0

    def snr_weights(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-sample min-SNR-gamma weights ``(B,)``, or None (plain MSE)."""
        if self.snr_gamma is None or self.rflow:
            return None
        import torch
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.scheduler, t)
        w = torch.clamp(snr, max=self.snr_gamma)
        if self.prediction_type == "epsilon":
            w = w / snr
        elif self.prediction_type == "v_prediction":
            w = w / (snr + 1)
        return w

    def per_sample_loss(self, pred: torch.Tensor, target: torch.Tensor,
                        t: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)``: the squared error averaged over every non-batch axis (fp32), min-SNR
        weighted when the objective has ``snr_gamma`` (then ``t`` is needed)."""
        per = per_sample_mse(pred, target)
        w = self.snr_weights(t) if t is not None else None
        return per if w is None else per * w

    def loss(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The batch's denoising loss (scalar): MSE, or the min-SNR-weighted per-sample mean."""
        import torch.nn.functional as F

        w = self.snr_weights(t)
        if w is None:
            return F.mse_loss(pred.float(), target.float())
        return (per_sample_mse(pred, target) * w).mean()


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` -> ``(B,)``: the squared error averaged over every non-batch axis (fp32)."""
    import torch.nn.functional as F

    err = F.mse_loss(pred.float(), target.float(), reduction="none")
    return err.mean(dim=tuple(range(1, err.ndim)))
