"""`denoiser: monai`: train -> generate through the same sampler; a 3-D batch through the trainer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.models.bundle import load_bundle
from medsynth.models.sampler import denoise
from medsynth.threads import torch_threads
from medsynth.train.config import TrainConfig
from medsynth.train.data import TrainData
from medsynth.train.loop import run_trainer, train
from tests.train.fixtures import make_dataset, make_store

MONAI = dict(denoiser="monai", block_out_channels=[8, 16], attention_levels=[False, True],
             norm_num_groups=4, attention_head_dim=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("monai")
    ds = make_dataset(root / "ds")
    make_store(root / "store", ds)
    return {"root": root, "ds": root / "ds", "store": root / "store"}


def _losses(folder: Path) -> list[tuple[int, float]]:
    with open(folder / "train_log.csv", newline="") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def test_train_monai_then_generate_through_the_same_sampler(tiny: dict[str, Path]) -> None:
    root = tiny["root"]
    recipe = root / "monai.yaml"
    recipe.write_text(TrainConfig.tiny(max_steps=3, sample_every=2,
                                       **{**MONAI, "denoiser": "auto"}).to_yaml())
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(tiny["ds"]), "--store", str(tiny["store"]),
                            "--out", str(root / "model"), "--config", str(recipe),
                            "--denoiser", "monai"])
    assert r.exit_code == 0, r.output
    model = root / "model"
    conf = json.loads((model / "unet" / "config.json").read_text())
    assert conf["_class_name"] == "DiffusionModelUNet" and conf["kwargs"]["spatial_dims"] == 2
    assert (model / "samples" / "step_0000002.png").is_file()
    b = load_bundle(model)
    assert b.denoiser.kind == "monai" and b.info.denoiser.spec["kind"] == "monai"
    assert json.loads((model / "medsynth.json").read_text())["outputs"]["denoiser"] == "monai"

    out = root / "synth"
    r = runner.invoke(app, ["generate", str(model), "--class", "all", "--n", "2", "--out", str(out),
                            "--steps", "3", "--sampler", "ddim", "--batch-size", "1"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert len(table) == 4 and (table["description"] != "").all()
    # One image by hand through the shared sampler: the same pixels generate wrote.
    from PIL import Image

    row = table.iloc[3]
    with torch_threads(int(row["threads"])):  # as recorded: bitwise at the same threads/batch
        h, m = b.encode_text([row["description"]], classes=[int(row["class_id"])])
        null_h, null_m = b.encode_text([""])
        x = denoise(b.denoiser, b.make_scheduler("ddim"), class_ids=[int(row["class_id"])],
                    text_hidden=h, text_mask=m, null_class=b.null_class, null_hidden=null_h,
                    null_mask=null_m, seeds=[int(row["seed"])], sample_shape=b.sample_shape,
                    steps=3, guidance=float(row["guidance"]))
    png = np.moveaxis(np.asarray(Image.open(out / row["png"])), -1, 0)
    np.testing.assert_array_equal(b.to_pixels(x)[0], png)


def test_monai_resume_restores_weights_ema_and_log(tiny: dict[str, Path]) -> None:
    root = tiny["root"]
    cfg = TrainConfig.tiny(max_steps=5, checkpoint_every=2, warmup_steps=1, **MONAI)
    train(tiny["ds"], root / "m_full", cfg=cfg, store_path=tiny["store"], progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(tiny["ds"], root / "m_part", cfg=cfg, store_path=tiny["store"], progress=False,
              interrupt_after=3)
    train(tiny["ds"], root / "m_part", cfg=cfg, store_path=tiny["store"], resume=True,
          progress=False)
    full, part = _losses(root / "m_full"), _losses(root / "m_part")
    assert [s for s, _ in part] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([v for _, v in part], [v for _, v in full], rtol=1e-5)
    for ema in (True, False):
        a, b = load_bundle(root / "m_full", ema=ema), load_bundle(root / "m_part", ema=ema)
        for p, q in zip(a.denoiser.parameters(), b.denoiser.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _volumes(n_per_class: int = 4, size: int = 8) -> TrainData:
    """Two classes of 8^3 uint8 volumes: a bright or a dim cube in a noisy background."""
    rng = np.random.default_rng(0)
    vols, labels, texts = [], [], []
    for ci, level in enumerate((200, 90)):
        for i in range(n_per_class):
            v = rng.integers(0, 30, (1, size, size, size)).astype(np.uint8)
            v[0, 2:6, 2:6, 2:6] = level
            vols.append(v)
            labels.append(ci)
            texts.append(f"a {'bright' if ci == 0 else 'dim'} cube" if i % 2 == 0 else "")
    return TrainData(pixels=np.stack(vols), labels=np.array(labels), texts=texts,
                     image_ids=[f"v{i}" for i in range(len(vols))], classes=["bright", "dim"],
                     modality="MR", dtype="uint8", hflip=False, vflip=False,
                     n_described=sum(1 for t in texts if t), source_size=(size, size))


def test_3d_batches_through_the_trainer(tiny: dict[str, Path]) -> None:
    """5-D tensors through the trainer's step (loss, class head, EMA), export and sampling."""
    data = _volumes()
    assert data.spatial_dims == 3 and data.spatial_shape == (8, 8, 8)
    out = tiny["root"] / "vol"
    out.mkdir()
    cfg = TrainConfig.tiny(max_steps=3, checkpoint_every=3, denoiser="auto",
                           block_out_channels=[8, 16], attention_levels=[False, True],
                           norm_num_groups=4, snr_gamma=5.0, class_loss_weight=0.5)
    # The 3D data path (volumes from a dataset folder) comes with the latent/3D issue; the
    # dataset here is only the artifact the model's manifest names as its input.
    from medsynth.imaging.dataset import open_dataset

    run_trainer(open_dataset(tiny["ds"]), data, cfg, out, progress=False)
    with open(out / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r["mse"])) and float(r["class_ce"]) > 0 for r in rows)
    outputs = json.loads((out / "medsynth.json").read_text())["outputs"]
    assert (outputs["spatial_dims"], outputs["shape"], outputs["denoiser"]) == (
        3, [8, 8, 8], "monai")
    b, raw = load_bundle(out), load_bundle(out, ema=False)
    assert b.spatial_dims == 3 and b.sample_shape == (1, 8, 8, 8) and b.modality == "MR"
    assert max(float((p - q).abs().max()) for p, q in
               zip(b.denoiser.parameters(), raw.denoiser.parameters(), strict=True)) > 0
    assert (out / "class_head.safetensors").is_file() and (out / "samples" / "grid.png").is_file()
    h, m = b.encode_text(["a bright cube", ""])
    x = denoise(b.denoiser, b.make_scheduler("dpmsolver++"), class_ids=[0, 1], text_hidden=h,
                text_mask=m, null_class=b.null_class, null_hidden=h[1:], null_mask=m[1:],
                seeds=[1, 2], sample_shape=b.sample_shape, steps=2, guidance=2.0)
    assert b.to_pixels(x).shape == (2, 1, 8, 8, 8)
