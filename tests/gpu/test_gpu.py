"""What only a CUDA GPU shows (``-m gpu``; skipped without CUDA, run by scripts/gpu-check.sh).

bf16 and fp16 training killed and resumed (the EMA on the GPU after the checkpoint load), a 3D
latent run, the sampler's images on the GPU vs the CPU, the autoencoder's decode and the FID
features in fp32 under autocast, and ``mixed_precision: auto`` by compute capability.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.train.config import TrainConfig
from medsynth.train.loop import train
from tests.latent.conftest import TINY_3D, tiny_latent

pytestmark = pytest.mark.gpu
DEV = "cuda" if torch.cuda.is_available() else "cpu"
"""cpu only under MEDSYNTH_GPU_DRY_RUN=1 (scripts/gpu-check.sh --dry-run): the same code, debugged."""

SAMPLER_ATOL = 2e-3
"""Sampler images GPU vs CPU, fp32, [-1, 1] units (3 DDIM steps of a tiny UNet; TF32 off)."""


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def ema_devices(monkeypatch) -> list[tuple[str, str]]:
    """(model parameter device, EMA shadow device) at every EMA step."""
    from diffusers.training_utils import EMAModel

    seen: list[tuple[str, str]] = []
    step = EMAModel.step

    def spy(self, parameters):  # type: ignore[no-untyped-def]
        params = list(parameters)
        seen.append((str(params[0].device), str(self.shadow_params[0].device)))
        return step(self, params)

    monkeypatch.setattr(EMAModel, "step", spy)
    return seen


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_training_resumes_on_the_gpu(rgb16: dict[str, Path], tmp_path: Path, precision: str,
                                         ema_devices: list[tuple[str, str]]) -> None:
    cfg = TrainConfig.tiny(max_steps=4, checkpoint_every=2, mixed_precision=precision)
    full, part = tmp_path / "full", tmp_path / "part"
    train(rgb16["ds"], full, cfg=cfg, store_path=rgb16["store"], progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(rgb16["ds"], part, cfg=cfg, store_path=rgb16["store"], progress=False,
              interrupt_after=2)
    ema_devices.clear()
    train(rgb16["ds"], part, cfg=cfg, store_path=rgb16["store"], progress=False, resume=True)
    assert ema_devices and all(p.startswith(DEV) and e == p for p, e in ema_devices), ema_devices
    lf, lp = _rows(full / "train_log.csv"), _rows(part / "train_log.csv")
    assert [r["step"] for r in lp] == [r["step"] for r in lf]
    np.testing.assert_allclose([float(r["loss"]) for r in lp], [float(r["loss"]) for r in lf],
                               rtol=2e-2)
    import json

    m = json.loads((part / "medsynth.json").read_text())["outputs"]
    assert m["mixed_precision"] == precision and m["device"].startswith(DEV)


def test_3d_latent_run_on_the_gpu(prostate16: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_latent(max_steps=3, mixed_precision="bf16", **TINY_3D)
    out = train(prostate16["ds"], tmp_path / "m3", cfg=cfg, store_path=prostate16["store"],
                progress=False)
    from medsynth.models.bundle import load_bundle

    b = load_bundle(out)
    assert b.latent and b.spatial_dims == 3


def _tiny_model(rgb16: dict[str, Path], tmp_path: Path) -> Path:
    cfg = TrainConfig.tiny(max_steps=2, mixed_precision="no")
    return train(rgb16["ds"], tmp_path / "cpu-model", cfg=cfg, store_path=rgb16["store"],
                 progress=False)


def test_sampler_images_gpu_match_cpu(rgb16: dict[str, Path], tmp_path: Path) -> None:
    from medsynth.models.bundle import load_bundle
    from medsynth.models.sampler import denoise

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = _tiny_model(rgb16, tmp_path)
    out = {}
    for dev in ("cpu", DEV):
        b = load_bundle(model, device=torch.device(dev))
        h, m = b.encode_text(["a round dark red lesion on a dark background"] * 2,
                             classes=[0, 1])
        nh, nm = b.encode_text([""])
        x = denoise(b.denoiser.float(), b.make_scheduler("ddim"), class_ids=[0, 1],
                    text_hidden=h.float(), text_mask=m, null_class=b.null_class,
                    null_hidden=nh.float(), null_mask=nm, seeds=[1, 2],
                    sample_shape=b.sample_shape, steps=3, guidance=2.0)
        out[dev] = x.float().cpu()
    diff = (out["cpu"] - out[DEV]).abs().max().item()
    assert diff <= SAMPLER_ATOL, diff


def test_autoencoder_decodes_in_fp32_under_autocast(rgb16: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from medsynth.models.autoencoder import load_autoencoder

    out = train(rgb16["ds"], tmp_path / "lat", cfg=tiny_latent(max_steps=1), progress=False,
                store_path=rgb16["store"])
    ae = load_autoencoder(out / "autoencoder", device=torch.device(DEV))
    z = torch.randn(2, ae.spec.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = ae.decode(z.to(DEV), window=0)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        amp = ae.decode(z.to(DEV), window=0)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, plain, rtol=1e-4, atol=1e-5)


def test_fid_features_fp32_on_the_gpu_match_the_cpu() -> None:
    """The feature extractor had its own fp16 autocast on CUDA: FID on a GPU came from fp16
    features. Now float32 there too (and under a caller's autocast), so GPU = CPU features."""
    from medsynth.metrics.features import FeatureExtractor

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cpu = FeatureExtractor(size=32, device="cpu")(x)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        dev = FeatureExtractor(size=32, device=DEV)(x)
    assert dev.dtype == torch.float32
    torch.testing.assert_close(dev, cpu, rtol=1e-3, atol=1e-3)  # TF32 off: fp32 kernels differ


def test_auto_precision_follows_compute_capability() -> None:
    from medsynth.train.loop import _mixed_precision

    if DEV == "cpu":
        pytest.skip("no compute capability on the CPU (dry run)")
    major, _ = torch.cuda.get_device_capability()
    want = "bf16" if major >= 8 else "fp16"  # pre-Ampere bf16 is emulated (slow)
    assert _mixed_precision(TrainConfig(mixed_precision="auto")) == want


def test_launch_helpers_see_every_cuda_device() -> None:
    from medsynth.train.launch import is_cuda

    if DEV == "cuda":
        assert is_cuda(torch.device("cuda", torch.cuda.device_count() - 1))
    assert is_cuda("cuda:1") and not is_cuda("cpu")
