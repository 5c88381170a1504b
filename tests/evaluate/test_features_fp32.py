"""FID/KID features are float32 even when the caller is under autocast (issue 25)."""

from __future__ import annotations

import torch

from medsynth.metrics.features import FeatureExtractor


def test_features_are_float32_under_an_enclosing_autocast() -> None:
    fx = FeatureExtractor(size=32, device="cpu")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seen: list[torch.dtype] = []
    fx.net.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    for m in fx.net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    plain = fx(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = fx(x)
    assert fx.dtype == "float32" and amp.dtype == torch.float32
    assert seen and set(seen) == {torch.float32}  # every conv ran in fp32, not bf16
    torch.testing.assert_close(amp, plain, rtol=1e-5, atol=1e-5)
