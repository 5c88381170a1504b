"""The recipe's GPU levers and launch helpers (issue 25) on the CPU: each does what it says and
leaves the numbers where it should (same samples in chunks, same EMA fused, SDPA = MONAI's
attention within float tolerance)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch

from medsynth.train import launch
from medsynth.train.config import TrainConfig


def test_launch_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert launch.process_group_kwargs(TrainConfig()) == {}
    assert launch.process_group_kwargs(TrainConfig(process_group_timeout_s=90)) == {
        "timeout": timedelta(seconds=90)}
    assert launch.is_cuda(torch.device("cuda", 1)) and launch.is_cuda("cuda:3")
    assert not launch.is_cuda(torch.device("cpu")) and not launch.is_cuda("cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert launch.rank_threads(None) is None and launch.rank_threads(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr("medsynth.threads.default_threads", lambda: 16)
    assert launch.rank_threads(None) == 4  # a share of the cores, not all of them per rank
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert "fp16" in launch.launch_precision_warning("no", "no")
    assert launch.launch_precision_warning("fp16", "fp16") is None
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert launch.launch_precision_warning("no", "no") is None


def test_sdpa_attention_matches_monai_attention() -> None:
    from tests.models.test_denoisers import _den, _inputs

    den = _den("monai", 2)
    x, h, m = _inputs(2)
    t, c = torch.tensor([3, 7]), torch.tensor([0, 2])
    with torch.no_grad():
        ref = den(x, t, c, h, m)
        assert launch.use_sdpa(den) > 0
        torch.testing.assert_close(den(x, t, c, h, m), ref, rtol=1e-4, atol=1e-5)


def test_ema_foreach_is_the_same_average() -> None:
    from diffusers.training_utils import EMAModel

    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=g)) for _ in range(3)]
    emas = [EMAModel(params, decay=0.9, use_ema_warmup=True, foreach=f) for f in (False, True)]
    for _ in range(4):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=g))
        for e in emas:
            e.step(params)
    for a, b in zip(emas[0].shadow_params, emas[1].shadow_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_sample_grid_chunks_give_the_same_images() -> None:
    from medsynth.train.samplegrid import in_chunks

    def sample(*, seeds: list[int], class_ids: list[int], scale: float) -> torch.Tensor:
        return torch.stack([torch.randn(2, generator=torch.Generator().manual_seed(s)) * scale + c
                            for s, c in zip(seeds, class_ids, strict=True)])

    per = {"seeds": [5, 6, 7, 8, 9], "class_ids": [0, 1, 2, 0, 1]}
    whole = in_chunks(sample, 5, per, scale=2.0)
    for size in (1, 2, 3):
        assert torch.equal(in_chunks(sample, size, per, scale=2.0), whole)
