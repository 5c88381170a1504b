"""generate --precision: bf16 autocast against fp32 (images within a tolerance), the recorded
precision is the one that ran, and the resolution rule of ``auto``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medsynth.errors import BadUsageError
from medsynth.models import sampler
from medsynth.models.denoiser import DenoiserSpec, build_denoiser
from medsynth.models.sampler import autocast_for, denoise, make_scheduler, resolve_precision

BF16_MEAN, BF16_MAX = 0.05, 0.5
"""Mean and largest pixel difference (images in [-1, 1]) allowed between the bf16 and the fp32
run of the same seeds. The random-weight nets here amplify rounding most (measured mean 0.03,
max 0.23: a random eps prediction divided by sqrt(alpha_bar) at the first steps); the trained
derm recipe model differs far less (docs/benchmarks.md, "CPU speed"). A broken bf16 path (other
noise, wrong conditioning) differs by the images' own spread (~0.7)."""


def _sample(precision: str | None, steps: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    den = build_denoiser(DenoiserSpec(channels=1, size=16, n_classes=2, cross_attention_dim=8,
                                      block_out_channels=(16, 32), attention_levels=(False, True),
                                      norm_num_groups=8)).eval()
    sched = make_scheduler("ddim", {"num_train_timesteps": 1000})
    g = torch.Generator().manual_seed(1)
    return denoise(den, sched, class_ids=[0, 1, 0], text_hidden=torch.randn(3, 4, 8, generator=g),
                   text_mask=torch.ones(3, 4, dtype=torch.long), null_class=2,
                   null_hidden=torch.zeros(1, 1, 8), null_mask=torch.ones(1, 1, dtype=torch.long),
                   seeds=[5, 6, 7], sample_shape=(1, 16, 16), steps=steps, guidance=2.0,
                   device=torch.device("cpu"), precision=precision)


def test_bf16_images_within_tolerance_of_fp32() -> None:
    fp32, bf16 = _sample("fp32"), _sample("bf16")
    assert fp32.dtype == bf16.dtype == torch.float32 and fp32.shape == bf16.shape
    diff = (fp32 - bf16).abs()
    assert diff.max() > 0  # bf16 really ran (it rounds)
    assert diff.mean() < BF16_MEAN and diff.max() < BF16_MAX  # the same images, within rounding
    # the default (None) on the CPU is the old float32 path, bitwise
    assert torch.equal(_sample(None), fp32)
    # the result is an ordinary tensor (not an inference tensor): callers may edit it in place
    fp32.add_(0)


def test_autocast_for_runs_what_it_names() -> None:
    x = torch.randn(4, 4)
    with autocast_for(torch.device("cpu"), "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast_for(torch.device("cpu"), "fp32"):
        assert (x @ x).dtype == torch.float32
    with autocast_for(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32


def test_resolve_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(sampler, "cpu_bf16_units", lambda: True)
    assert resolve_precision("auto", cpu) == "fp32"  # bf16 on the CPU only when asked for
    monkeypatch.setattr(sampler, "cpu_bf16_units", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(BadUsageError, match="--precision"):
        resolve_precision("fp8", cpu)


def test_cpu_bf16_units_reads_the_flags() -> None:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert sampler.cpu_bf16_units() == ("avx512_bf16" in text or "amx_bf16" in text)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generate_records_the_precision_that_ran(gray16_model: Path, tmp_path: Path,
                                                 precision: str) -> None:
    from medsynth.generate.config import GenerateConfig
    from medsynth.generate.run import run_generate

    out = tmp_path / precision
    run_generate(GenerateConfig(model=str(gray16_model), out=str(out), n=2, steps=2, batch_size=4,
                                precision=precision))
    table = pd.read_csv(out / "samples.csv")
    assert set(table["precision"]) == {precision}
    outputs = json.loads((out / "medsynth.json").read_text())["outputs"]
    assert outputs["precision"] == precision and outputs["precision_requested"] == precision
    assert outputs["cpu_bf16_units"] == sampler.cpu_bf16_units()


def test_generate_bf16_png_close_to_fp32(gray16_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    from medsynth.generate.config import GenerateConfig
    from medsynth.generate.run import run_generate

    pngs = {}
    for p in ("fp32", "bf16"):
        run_generate(GenerateConfig(model=str(gray16_model), out=str(tmp_path / p), n=2, steps=2,
                                    batch_size=4, precision=p))
        table = pd.read_csv(tmp_path / p / "samples.csv")
        pngs[p] = [np.asarray(Image.open(tmp_path / p / f), dtype=np.float64)
                   for f in table["png"]]
    scale = 4095 / 2  # uint16 PNG over the model's 0..4095 range: [-1, 1] units scaled
    diff = np.abs(np.stack(pngs["fp32"]) - np.stack(pngs["bf16"])) / scale
    assert diff.mean() < BF16_MEAN and diff.max() < BF16_MAX
