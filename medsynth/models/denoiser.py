"""The one place that decides the denoising network from the data's shape and the recipe.

Now: a pixel-space diffusers ``UNet2DConditionModel`` for 2D images (1 or 3 channels, any
square size divisible by ``2 ** (levels - 1)``) with CCELLA's dual-head conditioning: the class
id through the timestep embedding (``num_class_embeds = n_classes + 1``, the last id is the
null class for classifier-free guidance) and the text through cross-attention
(``cross_attention_dim`` = the text encoder's hidden size).

Hooks for what comes next: ``latent=True`` (an ``AutoencoderKL`` in front, the UNet on its
latents) and ``spatial_dims=3`` (a 3D UNet for volumes) are decided here, in
:func:`plan_denoiser`, and rejected with a clear message until implemented.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from medsynth.errors import MedsynthError


@dataclasses.dataclass
class DenoiserSpec:
    """Everything needed to build the denoiser; derived from the data and the recipe."""

    channels: int
    """Image channels (1 grayscale, 3 RGB); the UNet's in/out channels in pixel space."""
    size: int
    """Square image size in pixels."""
    n_classes: int
    """Number of real classes; the class embedding has ``n_classes + 1`` rows (last = null)."""
    cross_attention_dim: int
    """Text feature width D (the text encoder's hidden size)."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """Channels per resolution level."""
    attention_levels: tuple[bool, ...] = (False, True, True)
    """Which levels have cross-attention blocks (the mid block always has one)."""
    layers_per_block: int = 1
    """ResNet layers per level."""
    attention_head_dim: int = 8
    """Channels per attention head."""
    norm_num_groups: int = 8
    """GroupNorm groups (must divide every entry of block_out_channels)."""
    spatial_dims: int = 2
    """2 for images; 3 (volumes) is planned."""
    latent: bool = False
    """Latent diffusion with an AutoencoderKL (planned)."""

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        if len(self.attention_levels) != len(self.block_out_channels):
            raise MedsynthError("attention_levels must have one entry per block_out_channels level")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise MedsynthError(
                f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels "
                f"{list(self.block_out_channels)}"
            )
        if self.channels not in (1, 3):
            raise MedsynthError(f"the denoiser supports 1 or 3 channels, the data has {self.channels}")
        factor = 2 ** (len(self.block_out_channels) - 1)
        if self.size % factor:
            raise MedsynthError(
                f"image size {self.size} must be divisible by {factor} "
                f"({len(self.block_out_channels)} resolution levels)",
                hint="set size in the recipe (images are resized) or use fewer levels",
            )


def plan_denoiser(spec: DenoiserSpec) -> str:
    """Which network the spec calls for: ``unet2d`` now; ``latent-unet2d`` / ``unet3d`` planned."""
    if spec.spatial_dims == 3:
        raise MedsynthError("3D volumes are not supported by medsynth train yet (planned: a 3D UNet)",
                            hint="train on 2D slices for now")
    if spec.latent:
        raise MedsynthError("latent diffusion (AutoencoderKL) is not implemented yet; set latent: false")
    return "unet2d"


def build_denoiser(spec: DenoiserSpec) -> Any:
    """A freshly initialised ``UNet2DConditionModel`` for ``spec`` (see module doc)."""
    from diffusers import UNet2DConditionModel

    plan_denoiser(spec)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in spec.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(spec.attention_levels))
    heads = tuple(max(1, c // spec.attention_head_dim) for c in spec.block_out_channels)
    return UNet2DConditionModel(
        sample_size=spec.size,
        in_channels=spec.channels,
        out_channels=spec.channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=spec.block_out_channels,
        layers_per_block=spec.layers_per_block,
        norm_num_groups=spec.norm_num_groups,
        cross_attention_dim=spec.cross_attention_dim,
        attention_head_dim=heads,
        num_class_embeds=spec.n_classes + 1,
    )


def build_class_head(spec: DenoiserSpec) -> Any:
    """CCELLA's class-prediction head on the UNet mid-block features: pool -> MLP -> logits."""
    import torch.nn as nn

    c = spec.block_out_channels[-1]
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, c), nn.SiLU(),
                         nn.Linear(c, spec.n_classes))


class MidBlockTap:
    """Forward hook that keeps the UNet mid-block output for the class head (no UNet change)."""

    def __init__(self, unet: Any) -> None:
        self.features: Any = None
        self.handle = unet.mid_block.register_forward_hook(self._hook)

    def _hook(self, _module: Any, _inp: Any, out: Any) -> None:
        self.features = out[0] if isinstance(out, tuple) else out

    def remove(self) -> None:
        self.handle.remove()
