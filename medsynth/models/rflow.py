"""Rectified flow (MONAI ``RFlowScheduler``) behind the scheduler interface the sampler uses.

Rectified flow trains the network to predict the velocity ``v = x0 - noise`` of the straight
path ``x_t = (1 - t/T) x0 + (t/T) noise``; sampling integrates it with Euler steps from
``t = T`` (noise) to 0: ``x <- x + v * (t - t_next) / T``. MAISI uses it for 3D latents (30 steps
instead of 1000 DDPM ones).

:class:`RectifiedFlowScheduler` wraps MONAI's scheduler with the few diffusers methods the one
denoising loop (:func:`medsynth.models.sampler.denoise`) calls: ``set_timesteps``,
``timesteps``, ``init_noise_sigma``, ``scale_model_input``, ``step``, ``add_noise``, ``order``,
and ``save_pretrained`` / ``config`` for the model folder (``scheduler/scheduler_config.json``
with ``"_class_name": "RFlowScheduler"``).

Timestep transform (MONAI's resolution shift): off by default. ``base_img_size_numel`` is set
to the training latent's voxel count, so that even with the transform on, sampling at the
training shape is not shifted (MONAI's default base 32^3 would shift a 16^3 latent's schedule
toward low noise).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

RFLOW_CLASS = "RFlowScheduler"
CONFIG_NAME = "scheduler_config.json"


def rflow_config(num_train_timesteps: int, sample_shape: tuple[int, ...], *,
                 timestep_transform: bool = False) -> dict[str, Any]:
    """The scheduler config of a model trained with rectified flow on ``(C, *spatial)`` samples."""
    spatial = tuple(int(s) for s in sample_shape[1:])
    return {"_class_name": RFLOW_CLASS, "_library": "monai",
            "num_train_timesteps": int(num_train_timesteps), "use_discrete_timesteps": True,
            "use_timestep_transform": bool(timestep_transform),
            "base_img_size_numel": int(math.prod(spatial)), "spatial_dim": len(spatial),
            "prediction_type": "v_prediction"}


def is_rflow(config: dict[str, Any]) -> bool:
    """True for a rectified-flow scheduler config."""
    return config.get("_class_name") == RFLOW_CLASS


class RectifiedFlowScheduler:
    """MONAI ``RFlowScheduler`` with the diffusers-style surface of the sampler loop."""

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: dict[str, Any]) -> None:
        import torch
        from monai.networks.schedulers import RFlowScheduler

        self.config = dict(config)
        self.inner = RFlowScheduler(
            num_train_timesteps=int(config["num_train_timesteps"]),
            use_discrete_timesteps=bool(config.get("use_discrete_timesteps", True)),
            use_timestep_transform=bool(config.get("use_timestep_transform", False)),
            base_img_size_numel=int(config.get("base_img_size_numel", 32**3)),
            spatial_dim=int(config.get("spatial_dim", 3)))
        self.num_train_timesteps = int(config["num_train_timesteps"])
        self.timesteps = torch.empty(0)  # set_timesteps fills it
        self._next: list[float] = []

    @classmethod
    def from_config(cls, config: dict[str, Any], **_ignored: Any) -> RectifiedFlowScheduler:
        return cls(config)

    def set_timesteps(self, steps: int, device: torch.device | str | None = None) -> None:
        """``steps`` Euler steps from T down to T/steps (then to 0)."""
        numel = self.config.get("base_img_size_numel")
        self.inner.set_timesteps(int(steps), device=device, input_img_size_numel=numel)
        self.timesteps = self.inner.timesteps
        ts = [float(t) for t in self.timesteps.cpu()]
        self._next = ts[1:] + [0.0]

    def set_begin_index(self, _index: int) -> None:
        """(diffusers API) nothing to do: the step finds its index from the timestep."""

    def scale_model_input(self, x: torch.Tensor, _t: torch.Tensor | float) -> torch.Tensor:
        return x

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                  ) -> torch.Tensor:
        """``(1 - t/T) x0 + (t/T) noise`` (MONAI)."""
        return self.inner.add_noise(original, noise, timesteps)

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The training target: ``x0 - noise``."""
        return x0 - noise

    def step(self, model_output: torch.Tensor, t: torch.Tensor | float, sample: torch.Tensor,
             return_dict: bool = False, **_ignored: Any) -> tuple[torch.Tensor]:
        """One Euler step ``x_t -> x_{t_next}``."""
        tf = float(t)
        i = min(range(len(self._next)), key=lambda j: abs(float(self.timesteps[j]) - tf))
        # MONAI annotates the timesteps int; rectified-flow timesteps are continuous floats
        prev, _x0 = self.inner.step(model_output, tf, sample, self._next[i])  # type: ignore[arg-type]
        return (prev,)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(self.config, indent=2), "utf-8")
