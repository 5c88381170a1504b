"""`medsynth train` end to end on tiny data: bundle, plain diffusers, resume, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import MedsynthError
from medsynth.models.bundle import load_bundle
from medsynth.train.config import TrainConfig
from medsynth.train.loop import train
from tests.train.fixtures import make_dataset, make_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    ds = make_dataset(root / "ds")
    make_store(root / "store", ds, skip=1)
    return {"root": root, "ds": root / "ds", "store": root / "store"}


@pytest.fixture(scope="module")
def model(tiny: dict[str, Path]) -> Path:
    recipe = tiny["root"] / "tiny.yaml"
    recipe.write_text(TrainConfig.tiny(max_steps=4, checkpoint_every=2, sample_every=2).to_yaml())
    r = CliRunner().invoke(app, ["train", str(tiny["ds"]), "--store", str(tiny["store"]),
                                 "--out", str(tiny["root"] / "model"), "--config", str(recipe)])
    assert r.exit_code == 0, r.output
    return tiny["root"] / "model"


def _losses(folder: Path) -> list[tuple[int, float]]:
    with open(folder / "train_log.csv", newline="") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def test_model_folder_layout_and_manifest(model: Path, tiny: dict[str, Path]) -> None:
    for name in ("unet", "unet_raw", "scheduler", "medsynth_model.json", "prototypes.safetensors",
                 "class_head.safetensors", "README.md", "train_log.csv", "samples/grid.png",
                 "medsynth.json", "train_config.yaml"):
        assert (model / name).exists(), name
    m = json.loads((model / "medsynth.json").read_text())
    assert m["stage"] == "train" and m["config"]["train_splits"] == ["train"]
    assert [i["stage"] for i in m["inputs"]] == ["data", "describe"]
    assert m["outputs"]["steps"] == 4 and m["outputs"]["n_described"] == 6
    assert [s for s, _ in _losses(model)] == [1, 2, 3, 4]
    assert (model / "samples" / "step_0000002.png").is_file()  # grid every N steps
    card = (model / "README.md").read_text()
    assert "red" in card and "samples/" in card and "max_steps: 4" in card
    from huggingface_hub import ModelCard

    meta = ModelCard.load(model / "README.md").data  # parses back; no prior: no base model
    assert meta.library_name == "diffusers" and meta.license == "other" and meta.base_model is None
    assert {"medsynth", "diffusion", "medical-imaging", "synthetic-data"} <= set(meta.tags)
    assert "## Data" in card and "## Training" in card and "## Recipe" in card


def test_plain_diffusers_loads_it(model: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    sched = DDPMScheduler.from_pretrained(model / "scheduler")
    assert unet.config.num_class_embeds == 3 and unet.config.cross_attention_dim == 384
    assert sched.config.num_train_timesteps == 1000


def test_load_bundle_contract(model: Path) -> None:
    b = load_bundle(model)
    assert b.classes == ["red", "blue"] and b.null_class == 2
    assert (b.channels, b.size, b.spatial_dims, b.dtype, b.modality) == (3, 16, 2, "uint8", "XC")
    assert b.sha256 and b.train_splits == ["train"] and not b.unet.training
    h, m = b.encode_text(["a round crimson lesion on a dark background", ""], classes=[0, 1])
    assert h.shape[0] == 2 and h.shape[2] == 384 and m[1].sum() == 1
    raw, _ = b.encode_text(["a round crimson lesion on a dark background"])
    pulled, _ = b.encode_text(["a round crimson lesion on a dark background"], classes=[0])
    off, _ = b.encode_text(["a round crimson lesion on a dark background"], classes=[0],
                           prototype_strength=0.0)
    assert torch.equal(off, raw) and not torch.equal(pulled, raw)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    out = b.unet(x, torch.tensor([10]), encoder_hidden_states=h[:1], class_labels=torch.tensor([0]),
                 encoder_attention_mask=m[:1]).sample
    assert out.shape == x.shape
    px = b.to_pixels(x)
    assert px.dtype == np.uint8 and torch.allclose(b.from_pixels(px), x, atol=1 / 255)
    with pytest.raises(MedsynthError, match="unknown class"):
        b.class_id("green")
    raw_unet = load_bundle(model, ema=False).unet
    diff = [float((p - q).abs().max()) for p, q in zip(b.unet.parameters(), raw_unet.parameters(),
                                                         strict=True)]
    assert max(diff) > 0  # EMA and raw weights are different files


def test_resume_continues_exactly(tiny: dict[str, Path]) -> None:
    """Run 3 steps, 'kill', resume to 6: same loss curve and weights as 6 steps in one go."""
    root = tiny["root"]
    cfg = TrainConfig.tiny(max_steps=6, checkpoint_every=3, warmup_steps=2)
    train(tiny["ds"], root / "full", cfg=cfg, store_path=tiny["store"], progress=False)
    with pytest.raises(KeyboardInterrupt):  # killed after step 4 (last checkpoint: step 3)
        train(tiny["ds"], root / "part", cfg=cfg, store_path=tiny["store"], progress=False,
              interrupt_after=4)
    assert not (root / "part" / "medsynth.json").exists()
    assert [s for s, _ in _losses(root / "part")] == [1, 2, 3, 4]
    train(tiny["ds"], root / "part", cfg=cfg, store_path=tiny["store"], resume=True, progress=False)
    full, part = _losses(root / "full"), _losses(root / "part")
    assert [s for s, _ in part] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in part], [v for _, v in full], rtol=1e-5)
    a, b = load_bundle(root / "full"), load_bundle(root / "part")
    for p, q in zip(a.unet.parameters(), b.unet.parameters(), strict=True):  # EMA restored too
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_class_only_without_store(tiny: dict[str, Path]) -> None:
    out = train(tiny["ds"], tiny["root"] / "classonly", cfg=TrainConfig.tiny(), progress=False)
    b = load_bundle(out)
    assert b.prototypes == {} and len(b.manifest.inputs) == 1
    h, m = b.encode_text(["", ""], classes=[0, 1])
    assert float(h.abs().sum()) == 0.0 and m.sum() == 2


def test_bad_input_messages(tiny: dict[str, Path]) -> None:
    root = tiny["root"]
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(tiny["ds"]), "--out", str(root / "x"), "--classes", "red,green",
                            "--max-steps", "1"])
    assert r.exit_code == 1 and "unknown classes" in r.output and "green" in r.output
    r = runner.invoke(app, ["train", str(tiny["ds"]), "--out", str(root / "x2"), "--resume"])
    assert r.exit_code == 1 and "nothing to resume" in r.output
    r = runner.invoke(app, ["train", str(tiny["ds"]), "--out", str(root / "x3"), "--lr", "-1"])
    assert r.exit_code == 2 and "lr" in r.output


def test_corrupt_checkpoint_and_changed_recipe(tiny: dict[str, Path]) -> None:
    root = tiny["root"]
    out = root / "corrupt"
    cfg = TrainConfig.tiny(max_steps=2, checkpoint_every=1, keep_checkpoints=2)
    train(tiny["ds"], out, cfg=cfg, progress=False)
    before = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    last = out / "checkpoints" / "step-0000002"
    for f in last.glob("*.safetensors"):
        f.write_bytes(b"garbage")
    for f in last.glob("*.bin"):
        f.write_bytes(b"garbage")
    with pytest.raises(MedsynthError, match="corrupt") as e:
        train(tiny["ds"], out, cfg=cfg.replace(max_steps=3), resume=True, progress=False)
    assert "step-0000001" in str(e.value) or "delete" in str(e.value)
    # Nothing already written is damaged by the failed resume: the finished model still loads.
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert load_bundle(out).info.steps == 2
    shutil.rmtree(last)
    with pytest.raises(MedsynthError, match="other settings"):
        train(tiny["ds"], out, cfg=cfg.replace(lr=1e-2), resume=True, progress=False)
    train(tiny["ds"], out, cfg=cfg.replace(max_steps=3), resume=True, progress=False)
    assert [s for s, _ in _losses(out)] == [1, 2, 3]
    assert load_bundle(out).info.steps == 3


def test_bf16_autocast_on_cpu(tiny: dict[str, Path]) -> None:
    out = train(tiny["ds"], tiny["root"] / "bf16", cfg=TrainConfig.tiny(mixed_precision="bf16"),
                progress=False)
    m = json.loads((out / "medsynth.json").read_text())
    assert m["outputs"]["mixed_precision"] == "bf16"
    assert all(np.isfinite(v) for _, v in _losses(out))


def test_interrupted_run_can_be_overwritten_but_not_silently_reused(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "interrupted"
    cfg = TrainConfig.tiny(max_steps=3, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny["ds"], out, cfg=cfg, progress=False, interrupt_after=1)
    with pytest.raises(MedsynthError, match="--resume"):
        train(tiny["ds"], out, cfg=cfg, progress=False)  # neither --resume nor --overwrite
    train(tiny["ds"], out, cfg=cfg.replace(max_steps=1), overwrite=True, progress=False)
    assert [s for s, _ in _losses(out)] == [1] and (out / "medsynth.json").is_file()


def test_v_prediction_with_min_snr(tiny: dict[str, Path]) -> None:
    out = train(tiny["ds"], tiny["root"] / "vpred",
                cfg=TrainConfig.tiny(prediction_type="v_prediction", snr_gamma=5.0), progress=False)
    b = load_bundle(out)
    assert b.prediction_type == "v_prediction" == b.scheduler_config["prediction_type"]
    assert all(np.isfinite(v) for _, v in _losses(out))


def test_channels_last_is_a_layout_not_a_different_model(tiny: dict[str, Path]) -> None:
    """Same seed with and without channels-last: same losses and weights; plain contiguous files."""
    root = tiny["root"]
    cfg = TrainConfig.tiny(max_steps=3, checkpoint_every=3)
    a = train(tiny["ds"], root / "cl", cfg=cfg.replace(channels_last=True), store_path=tiny["store"],
              progress=False)
    b = train(tiny["ds"], root / "nchw", cfg=cfg.replace(channels_last=False),
              store_path=tiny["store"], progress=False)
    np.testing.assert_allclose([v for _, v in _losses(a)], [v for _, v in _losses(b)], rtol=1e-4)
    ua, ub = load_bundle(a).unet, load_bundle(b).unet
    for p, q in zip(ua.parameters(), ub.parameters(), strict=True):
        assert p.is_contiguous()
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)
