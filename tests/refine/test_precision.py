"""Refine on a GPU (issue 25), checked on the CPU: the forward passes run under the shared AMP
choice, a checkpoint's optimizer state loads to the CPU first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsynth.refine.config import RefineConfig
from medsynth.refine.run import refine

FAST = dict(steps=2, batch_size=2, log_every=1, checkpoint_every=1, early_stop=False, rank=4)


def test_refine_autocasts_per_the_amp_choice(tiny_model: Path, judged: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth import precision
    from medsynth.models.bundle import load_bundle

    monkeypatch.setattr(precision, "amp_choice", lambda device=None: "bf16")
    cls = type(load_bundle(tiny_model).denoiser)
    seen: list[tuple[bool, object]] = []
    forward = cls.forward

    def recording(self, *a, **k):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward(self, *a, **k)

    monkeypatch.setattr(cls, "forward", recording)
    for method in ("dpo", "rwr"):
        seen.clear()
        refine(tiny_model, judged, tmp_path / method, progress=False,
               cfg=RefineConfig(**{**FAST, "method": method, "real_fraction": 0.0}))
        assert seen and set(seen) == {(True, torch.bfloat16)}


def test_resume_loads_the_optimizer_state_to_the_cpu(tiny_model: Path, judged: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out, cfg = tmp_path / "m2", RefineConfig(**FAST)
    with pytest.raises(KeyboardInterrupt):
        refine(tiny_model, judged, out, cfg=cfg, progress=False, interrupt_after=(1, 1))
    where: list[object] = []
    load = torch.load

    def recording(*a, **k):
        where.append(k.get("map_location"))
        return load(*a, **k)

    monkeypatch.setattr(torch, "load", recording)
    refine(tiny_model, judged, out, cfg=cfg, progress=False, resume=True)
    assert where == ["cpu"]
