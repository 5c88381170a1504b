"""Every bad init input: one line, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medsynth.errors import MedsynthError
from medsynth.train.config import TrainConfig
from medsynth.train.loop import train
from tests.prior.conftest import run_cfg


def _refused(ds: Path, out: Path, cfg: TrainConfig, match: str) -> None:
    with pytest.raises(MedsynthError, match=match) as e:
        train(ds, out, cfg=cfg, progress=False)
    assert "\n" not in e.value.message
    assert not out.exists()


def test_not_a_model(gray16: Path, tmp_path: Path) -> None:
    _refused(gray16, tmp_path / "o", run_cfg(init=str(gray16)), "'data' artifact, not a model")
    (tmp_path / "empty").mkdir()
    _refused(gray16, tmp_path / "o", run_cfg(init=str(tmp_path / "empty")), "empty folder")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    _refused(gray16, tmp_path / "o", run_cfg(init=str(tmp_path / "junk")), "not a model")


def test_unsupported_pipeline_families(gray16: Path, tiny_sd: Path, tmp_path: Path) -> None:
    for family, match in (("StableDiffusionXLPipeline", "SDXL"),
                          ("StableDiffusion3Pipeline", "MMDiT"),
                          ("KandinskyPipeline", "unsupported pipeline family")):
        p = tmp_path / family
        shutil.copytree(tiny_sd, p)
        idx = json.loads((p / "model_index.json").read_text())
        (p / "model_index.json").write_text(json.dumps({**idx, "_class_name": family}))
        _refused(gray16, tmp_path / "o", run_cfg(init=str(p)), match)


def test_hub_id_not_cached(gray16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _refused(gray16, tmp_path / "o", run_cfg(init="org/nothing-here"), "not in the local")


def test_text_encoder_and_channel_mismatch(gray16: Path, tiny_sd: Path, parent: Path,
                                           tmp_path: Path) -> None:
    p = tmp_path / "wide"
    shutil.copytree(tiny_sd, p)
    conf = json.loads((p / "text_encoder" / "config.json").read_text())
    (p / "text_encoder" / "config.json").write_text(json.dumps({**conf, "hidden_size": 48}))
    _refused(gray16, tmp_path / "o", run_cfg(init=str(p)), "48-wide features")
    # the parent is an RGB model, the data are grayscale
    _refused(gray16, tmp_path / "o", run_cfg(init=str(parent)), "3-channel model")
    # a recipe that contradicts the pipeline's scheduler
    _refused(gray16, tmp_path / "o", run_cfg(init=str(tiny_sd), beta_schedule="linear"),
             "beta_schedule is 'linear'")


def test_lora_rank_and_lora_without_init() -> None:
    with pytest.raises(MedsynthError, match="lora_rank must be >= 1"):
        TrainConfig(init="x", adapter="lora", lora_rank=0)
    with pytest.raises(MedsynthError, match="needs init|set init"):
        TrainConfig(adapter="lora")


def test_resume_with_another_init(gray16: Path, tiny_sd: Path, parent: Path,
                                  tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(gray16, out, cfg=run_cfg(init=str(tiny_sd)), progress=False, interrupt_after=1)
    before = sorted(p.name for p in out.rglob("*"))
    for other in (str(parent), None):
        with pytest.raises(MedsynthError, match="cannot resume it") as e:
            train(gray16, out, cfg=run_cfg(init=other), progress=False, resume=True)
        assert "\n" not in e.value.message
    assert sorted(p.name for p in out.rglob("*")) == before
