"""The AMP dtype choice: bf16 from compute capability 8 (Ampere) up, else fp16; none on CPU."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("capability", "want"), [((7, 5), "fp16"), ((7, 0), "fp16"),
                                                  ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_amp_choice_by_capability(monkeypatch: pytest.MonkeyPatch, capability, want) -> None:
    import torch

    from medsynth import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulated too
    assert precision.amp_choice() == want
    assert precision.resolve("auto") == want
    assert precision.resolve("no") == "no"
    assert precision.amp_choice("cpu") == "no"


def test_no_amp_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from medsynth import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.amp_choice() == "no" and precision.resolve("auto") == "no"
    assert precision.amp_dtype("bf16") == torch.bfloat16 and precision.amp_dtype("no") is None


def test_train_uses_the_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import _mixed_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert _mixed_precision(TrainConfig(mixed_precision="auto")) == "fp16"
    assert _mixed_precision(TrainConfig(mixed_precision="bf16")) == "bf16"
