"""``medsynth train --stage clip``: learning beats chance, resume is exact, the folder contract,
bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medsynth.artifacts import read_manifest
from medsynth.cli import app
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.models.clip import load_clip
from medsynth.train.clip_config import ClipConfig
from medsynth.train.clip_run import CLIP_CONFIG, evaluate_pairs, load_pairs, train_clip
from tests.clip_data import make_clip_data

RECIPE = dict(max_steps=60, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=20,
              checkpoint_every=20, log_every=10, shift=0.0)


@pytest.fixture(scope="module")
def clip_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_clip_data(tmp_path_factory.mktemp("clipdata"))


@pytest.fixture(scope="module")
def trained(clip_inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, store = clip_inputs
    out = tmp_path_factory.mktemp("clip") / "clip"
    return train_clip(data, out, cfg=ClipConfig.tiny(**RECIPE), store_path=store,
                      progress=False)


def test_training_beats_chance_on_a_separable_set(trained: Path,
                                                  clip_inputs: tuple[Path, Path]) -> None:
    m = read_manifest(trained, "clip")
    val = m.outputs["val"]
    # 8 distinct texts (shape x colour x size): chance image->text R@1 is 1/8 on val pairs.
    assert m.outputs["val_source"] == "split:val"
    assert val["i2t_r1"] > 2 * val["i2t_r1_chance"]
    assert val["t2i_r1"] > 2 * val["t2i_r1_chance"]
    # And the untrained network (same seed, step 0) does not.
    from medsynth.imaging.dataset import open_dataset
    from medsynth.store import open_store
    from medsynth.train.clip_run import pooled_text_features

    data, store = clip_inputs
    pairs = load_pairs(open_dataset(data), open_store(store), ClipConfig.tiny(**RECIPE),
                       progress=False)
    clip = load_clip(trained)
    pooled = pooled_text_features(pairs.texts, clip.info.text_encoder)
    ids = pairs.text_ids[pairs.val_idx]
    texts = [pairs.texts[int(i)] for i in ids]
    trained_r = evaluate_pairs(clip.model, pairs.x[pairs.val_idx], pooled[ids], texts)
    assert trained_r["mean_recall"] == pytest.approx(val["mean_recall"], abs=1e-6)
    from medsynth.models.clip import build_clip

    torch.manual_seed(0)
    fresh = build_clip(clip.info.spec)
    fresh_r = evaluate_pairs(fresh, pairs.x[pairs.val_idx], pooled[ids], texts)
    assert trained_r["mean_recall"] > fresh_r["mean_recall"] + 0.15


def test_folder_contract(trained: Path, clip_inputs: tuple[Path, Path]) -> None:
    m = read_manifest(trained, "clip")
    assert [i["stage"] for i in m.inputs] == ["data", "describe"]
    assert m.outputs["train_splits"] == ["train"]
    for f in ("clip_model.json", "clip.safetensors", CLIP_CONFIG, "train_log.csv"):
        assert (trained / f).is_file(), f
    info = json.loads((trained / "clip_model.json").read_text())
    assert info["spec"]["spatial_dims"] == 2 and info["spec"]["channels"] == 3
    assert info["n_train_pairs"] == 28 and info["n_val_pairs"] == 6
    rows = list(csv.DictReader((trained / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows[1]["val_mean_recall"] and not rows[0]["val_mean_recall"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    # Only train-split images are training pairs; no test image is among them.
    clip = load_clip(trained)
    emb = clip.embed_texts(["a large red disc", "a small blue square"])
    assert emb.shape == (2, 16)


def test_resume_gives_the_uninterrupted_run(clip_inputs: tuple[Path, Path], trained: Path,
                                            tmp_path: Path) -> None:
    data, store = clip_inputs
    out = tmp_path / "resumed"
    cfg = ClipConfig.tiny(**RECIPE)
    with pytest.raises(KeyboardInterrupt):
        train_clip(data, out, cfg=cfg, store_path=store, progress=False, interrupt_after=25)
    assert not (out / "medsynth.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000020.pt"]
    # Without --resume the interrupted run is refused (it holds a checkpoint).
    with pytest.raises(MedsynthError, match="not empty"):
        train_clip(data, out, cfg=cfg, store_path=store, progress=False)
    # Other settings are refused on resume.
    with pytest.raises(MedsynthError, match="lr"):
        train_clip(data, out, cfg=ClipConfig.tiny(**{**RECIPE, "lr": 1e-2}), store_path=store,
                   progress=False, resume=True)
    train_clip(data, out, cfg=cfg, store_path=store, progress=False, resume=True)
    a = load_clip(out).model.state_dict()
    b = load_clip(trained).model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    assert (out / "train_log.csv").read_text().splitlines()[1:] and \
        [r["step"] for r in csv.DictReader((out / "train_log.csv").open())] == \
        [r["step"] for r in csv.DictReader((trained / "train_log.csv").open())]


def test_cli_trains_and_refuses_bad_input(clip_inputs: tuple[Path, Path], tmp_path: Path
                                          ) -> None:
    data, store = clip_inputs
    runner = CliRunner()
    out = tmp_path / "cli"
    recipe = tmp_path / "clip.yaml"
    recipe.write_text(ClipConfig.tiny(max_steps=2, eval_every=2, checkpoint_every=2).to_yaml())
    res = runner.invoke(app, ["train", str(data), "--stage", "clip", "--store", str(store),
                              "--out", str(out), "--config", str(recipe), "--max-steps", "3"])
    assert res.exit_code == 0, res.output
    assert read_manifest(out, "clip").outputs["max_steps"] == 3
    # No store: refused before anything is written.
    res = runner.invoke(app, ["train", str(data), "--stage", "clip", "--out",
                              str(tmp_path / "nostore"), "--config", str(recipe)])
    assert res.exit_code != 0 and "--store" in res.output
    assert not (tmp_path / "nostore").exists()
    # Diffusion-only options and the test split are refused.
    res = runner.invoke(app, ["train", str(data), "--stage", "clip", "--store", str(store),
                              "--out", str(tmp_path / "x"), "--denoiser", "monai"])
    assert res.exit_code != 0 and "--denoiser" in res.output
    with pytest.raises(BadUsageError, match="test"):
        ClipConfig(splits=["train", "test"])
    res = runner.invoke(app, ["train", str(data), "--stage", "clip", "--store", str(store),
                              "--out", str(tmp_path / "y"), "--splits", "train,test"])
    assert res.exit_code != 0 and "test" in res.output and not (tmp_path / "y").exists()
    res = runner.invoke(app, ["train", str(data), "--stage", "bogus", "--out",
                              str(tmp_path / "z")])
    assert res.exit_code != 0 and "--stage" in res.output


def test_store_without_described_training_images_is_refused(tmp_path: Path) -> None:
    data, store = make_clip_data(tmp_path / "d", n_per_class=8)
    with pytest.raises(MedsynthError, match="unknown classes"):
        train_clip(data, tmp_path / "o", cfg=ClipConfig.tiny(classes=["triangle"]),
                   store_path=store, progress=False)
    assert not (tmp_path / "o").exists()
    with pytest.raises(MedsynthError, match="described image"):
        train_clip(data, tmp_path / "o", cfg=ClipConfig.tiny(splits=["val"], classes=["disc"]),
                   store_path=store, progress=False)
    assert not (tmp_path / "o").exists()


def test_trains_on_volumes(tmp_path: Path) -> None:
    """A 3D dataset goes through the same stage: 3D encoder, 3D shift augmentation."""
    from tests.clip_data import make_clip_volumes

    data, store = make_clip_volumes(tmp_path / "v", n_per_class=16)
    out = train_clip(data, tmp_path / "clip3d", store_path=store, progress=False,
                     cfg=ClipConfig.tiny(max_steps=3, eval_every=3, checkpoint_every=3,
                                         shift=0.2, hflip="yes", vflip="yes"))
    m = read_manifest(out, "clip")
    assert m.outputs["spatial_dims"] == 3 and m.outputs["size"] == 12
    # No val split: a held-out share of the training pairs validates.
    assert m.outputs["val_source"] == "held-out:0.15" and m.outputs["n_val_pairs"] == 4
    clip = load_clip(out)
    assert clip.model.image_encoder.conv1.weight.ndim == 5
    emb = clip.embed_images(torch.rand(3, 1, 10, 14, 12))
    assert emb.shape == (3, 16)
