"""Intensity mapping round trips and the denoiser factory."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.errors import MedsynthError
from medsynth.models.denoiser import DenoiserSpec, build_class_head, build_denoiser
from medsynth.models.intensity import IntensityMapping


def test_uint8_round_trip_is_exact() -> None:
    a = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    m = IntensityMapping.for_data(a[None])
    assert (m.low, m.high) == (0.0, 255.0)
    x = m.from_pixels(a)
    assert x.min() == -1.0 and x.max() == 1.0
    assert np.array_equal(m.to_pixels(x), a)


def test_uint16_keeps_16_bits() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(100, 4000, (4, 1, 16, 16)).astype(np.uint16)
    m = IntensityMapping.for_data(a)
    assert m.dtype == "uint16" and m.low == a.min() and m.high == a.max()
    back = m.to_pixels(m.from_pixels(a))
    assert back.dtype == np.uint16 and np.array_equal(back, a)  # no squashing to 8 bits
    assert len(np.unique(back)) > 256


def test_mapping_rejects_bad_range() -> None:
    with pytest.raises(MedsynthError):
        IntensityMapping("uint8", 5.0, 5.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_factory_builds_dual_head_unet(channels: int) -> None:
    import torch

    spec = DenoiserSpec(channels=channels, size=16, n_classes=3, cross_attention_dim=12,
                        block_out_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4)
    den = build_denoiser(spec)
    unet = den.net
    assert den.kind == "diffusers" and den.n_class_embeds == 4  # 3 classes + null
    assert unet.config.num_class_embeds == 4 and unet.config.cross_attention_dim == 12
    assert unet.config.in_channels == channels == unet.config.out_channels
    x = torch.randn(2, channels, 16, 16)
    h = torch.randn(2, 5, 12)
    out = den(x, torch.tensor([3, 500]), torch.tensor([0, 3]), h, torch.ones(2, 5))
    assert out.shape == x.shape
    logits = build_class_head(spec)(den.pooled_features())
    assert logits.shape == (2, 3)
    # The class changes the output (it enters through the timestep embedding).
    out2 = den(x, torch.tensor([3, 500]), torch.tensor([1, 2]), h, torch.ones(2, 5))
    assert not torch.allclose(out, out2)


def test_factory_rejects_what_it_cannot_build() -> None:
    with pytest.raises(MedsynthError, match="divisible"):
        DenoiserSpec(channels=1, size=18, n_classes=2, cross_attention_dim=8,
                     block_out_channels=(8, 16, 16), attention_levels=(False, True, True),
                     norm_num_groups=4)
    with pytest.raises(MedsynthError, match="3D volumes need denoiser: monai"):
        build_denoiser(DenoiserSpec(channels=1, size=16, n_classes=2, cross_attention_dim=8,
                                    block_out_channels=(8, 16), attention_levels=(False, True),
                                    norm_num_groups=4, spatial_dims=3))
    with pytest.raises(MedsynthError, match="channel"):
        DenoiserSpec(channels=0, size=16, n_classes=2, cross_attention_dim=8,
                     block_out_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4)
    with pytest.raises(MedsynthError, match="attention_head_dim"):
        DenoiserSpec(kind="monai", channels=1, size=16, n_classes=2, cross_attention_dim=8,
                     block_out_channels=(8, 12), attention_levels=(False, True), norm_num_groups=4)
