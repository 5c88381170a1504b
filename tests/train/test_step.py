"""The training step's GPU-readiness (issue 25): the EMA reaches the device after the
checkpoint load, loss sums stay on the device between log rows, a non-finite loss ends an
fp32/bf16 run (and is left to the GradScaler under fp16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.models.bundle import load_bundle
from medsynth.train.config import TrainConfig
from medsynth.train.loop import _Window, train
from tests.train.fixtures import log_rows, make_dataset, make_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("step")
    ds = make_dataset(root / "ds")
    make_store(root / "store", ds)
    return {"root": root, "ds": root / "ds", "store": root / "store"}



def test_ema_reaches_the_device_after_the_checkpoint_load(tiny: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate reloads the EMA's shadow params on the CPU: the trainer moves the EMA after
    the load, and every EMA step sees shadows on the parameters' device and dtype."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    root = tiny["root"]
    cfg = TrainConfig.tiny(max_steps=4, checkpoint_every=2, log_every=2, warmup_steps=1)
    train(tiny["ds"], root / "full", cfg=cfg, store_path=tiny["store"], progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(tiny["ds"], root / "part", cfg=cfg, store_path=tiny["store"], progress=False,
              interrupt_after=3)
    calls: list[str] = []
    load, to, step = Accelerator.load_state, EMAModel.to, EMAModel.step

    def load_state(self, *a, **k):
        calls.append("load_state")
        return load(self, *a, **k)

    def ema_to(self, device=None, dtype=None, **k):
        calls.append("ema.to")
        return to(self, device=device, dtype=dtype, **k)

    def ema_step(self, parameters):
        parameters = list(parameters)
        for s, p in zip(self.shadow_params, parameters, strict=True):
            assert (s.device, s.dtype) == (p.device, p.dtype)
        calls.append("ema.step")
        return step(self, parameters)

    monkeypatch.setattr(Accelerator, "load_state", load_state)
    monkeypatch.setattr(EMAModel, "to", ema_to)
    monkeypatch.setattr(EMAModel, "step", ema_step)
    train(tiny["ds"], root / "part", cfg=cfg, store_path=tiny["store"], resume=True,
          progress=False)
    assert calls.index("load_state") < calls.index("ema.to") < calls.index("ema.step")
    assert calls.count("ema.step") == 2  # steps 3 and 4
    # and the resumed run is the uninterrupted one
    assert log_rows(root / "part") == [
        {**r, "images_per_s": p["images_per_s"], "elapsed_s": p["elapsed_s"]}
        for r, p in zip(log_rows(root / "full"), log_rows(root / "part"), strict=True)]
    a, b = load_bundle(root / "full"), load_bundle(root / "part")
    for p, q in zip(a.unet.parameters(), b.unet.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_no_host_sync_between_loglog_rows(tiny: dict[str, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of a tensor's value on the host (float, item, tolist, bool) inside the loop do
    not grow with the steps between log rows: they happen at log rows and checkpoints only.
    (torch's AdamW reads its step counter, a CPU tensor without ``capturable``: no GPU sync.)"""
    import sys

    from medsynth.train import loop

    reads = {"n": 0, "on": False}
    real_loop = loop._Trainer._loop

    def counted(name):
        orig = getattr(torch.Tensor, name)

        def f(self, *a, **k):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if reads["on"] and "torch/optim/" not in caller:
                reads["n"] += 1
            return orig(self, *a, **k)
        return f

    def in_loop(self, start):
        reads["on"] = True
        try:
            return real_loop(self, start)
        finally:
            reads["on"] = False

    for name in ("__float__", "item", "tolist", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    monkeypatch.setattr(loop._Trainer, "_loop", in_loop)
    counts = []
    for steps in (2, 6):
        reads["n"] = 0
        cfg = TrainConfig.tiny(max_steps=steps, log_every=100, checkpoint_every=100,
                               warmup_steps=0)
        train(tiny["ds"], tiny["root"] / f"sync{steps}", cfg=cfg, store_path=tiny["store"],
              progress=False)
        counts.append(reads["n"])
    assert counts[0] == counts[1], counts


def test_window_sums_and_nonfinite_losses() -> None:
    t = torch.tensor
    win = _Window("cpu", {}, skip_nonfinite=False)
    for v in (1.0, 3.0):
        win.add({"loss": t(v), "mse": t(v / 2), "ce": t(0.0), "tce": t(0.0)}, 1, 4)
        win.n += 1
    m = win.means(2)
    assert (m["loss"], m["mse"]) == (2.0, 1.0)
    assert win.saved() == {"loss": 4.0, "mse": 2.0, "ce": 0.0, "tce": 0.0, "n": 2, "skipped": 0.0}
    win.add({"loss": t(float("nan")), "mse": t(1.0), "ce": t(0.0), "tce": t(0.0)}, 1, 4)
    win.n += 1
    with pytest.raises(MedsynthError, match="diverged by step 3"):
        win.means(3)
    with pytest.raises(MedsynthError, match="diverged"):
        win.check(3)
    # fp16 with a GradScaler: the step it skipped is left out of the means
    win = _Window("cpu", {}, skip_nonfinite=True)
    for v in (1.0, float("inf"), 3.0):
        win.add({"loss": t(v), "mse": t(v), "ce": t(0.0), "tce": t(0.0)}, 1, 4)
        win.n += 1
    win.check(3)
    assert win.means(3)["loss"] == 2.0 and win.saved()["skipped"] == 1.0


def test_nonfinite_loss_ends_an_fp32_run_before_its_checkpoint(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth.models.objective import Objective

    calls = {"n": 0}
    real = Objective.loss

    def poisoned(self, pred, target, t):
        calls["n"] += 1
        loss = real(self, pred, target, t)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(Objective, "loss", poisoned)
    out = tiny["root"] / "nan"
    cfg = TrainConfig.tiny(max_steps=4, log_every=4, checkpoint_every=2, mixed_precision="no")
    with pytest.raises(MedsynthError, match="diverged by step 4"):
        train(tiny["ds"], out, cfg=cfg, store_path=tiny["store"], progress=False)
    # the checkpoint of step 2 (before the bad step) is kept, none after it
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-0000002"]
    assert np.isfinite([float(r["loss"]) for r in log_rows(out)]).all()
