"""The autoencoder phase of `medsynth train`: resume, latent cache, scaling factor, reuse, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medsynth.errors import MedsynthError
from medsynth.imaging.dataset import open_dataset
from medsynth.models.autoencoder import load_autoencoder
from medsynth.models.bundle import load_bundle
from medsynth.models.intensity import IntensityMapping
from medsynth.train.loop import train
from tests.latent.conftest import TINY_3D, tiny_latent


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def latent2d(rgb16: dict[str, Path]) -> dict[str, Path]:
    """A finished tiny 2D latent model, and the same run killed in each phase then resumed."""
    root = rgb16["root"]
    cfg = tiny_latent(max_steps=3, checkpoint_every=2, warmup_steps=1)
    full, part = root / "lat_full", root / "lat_part"
    train(rgb16["ds"], full, cfg=cfg, store_path=rgb16["store"], progress=False)
    with pytest.raises(KeyboardInterrupt):  # killed in the autoencoder phase, after step 3
        train(rgb16["ds"], part, cfg=cfg, store_path=rgb16["store"], progress=False,
              interrupt_after_ae=3)
    assert not (part / "autoencoder").exists() and not (part / "medsynth.json").exists()
    with pytest.raises(KeyboardInterrupt):  # resumed, then killed in the denoiser phase
        train(rgb16["ds"], part, cfg=cfg, store_path=rgb16["store"], progress=False,
              resume=True, interrupt_after=2)
    assert (part / "autoencoder" / "config.json").is_file()
    train(rgb16["ds"], part, cfg=cfg, store_path=rgb16["store"], progress=False, resume=True)
    return {"full": full, "part": part, **rgb16}


def test_both_phases_resume_exactly(latent2d: dict[str, Path]) -> None:
    full, part = latent2d["full"], latent2d["part"]
    ae_full, ae_part = _rows(full / "autoencoder_log.csv"), _rows(part / "autoencoder_log.csv")
    assert [int(r["step"]) for r in ae_part] == [1, 2, 3, 4]
    for a, b in zip(ae_full, ae_part, strict=True):
        np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=1e-5)
    wa = load_file(str(full / "autoencoder" / "model.safetensors"))
    wb = load_file(str(part / "autoencoder" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    lf, lp = _rows(full / "train_log.csv"), _rows(part / "train_log.csv")
    assert [int(r["step"]) for r in lp] == [1, 2, 3]
    np.testing.assert_allclose([float(r["loss"]) for r in lp], [float(r["loss"]) for r in lf],
                               rtol=1e-5)
    a, b = load_bundle(full), load_bundle(part)
    for p, q in zip(a.denoiser.parameters(), b.denoiser.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_latent_cache_and_scaling_factor(latent2d: dict[str, Path]) -> None:
    model = latent2d["full"]
    b = load_bundle(model)
    info = b.info.autoencoder
    assert info is not None and b.latent
    assert info.latent_channels == 4 and info.latent_shape == [8, 8]
    assert b.sample_shape == (4, 8, 8) and b.shape == (16, 16) and b.channels == 3
    caches = list((model / "checkpoints" / "cache").glob("latents_*.safetensors"))
    assert len(caches) == 1
    mu = load_file(str(caches[0]))["mu"]
    # 8 training images x 4 flip variants (XC: both flips allowed) x latent
    assert tuple(mu.shape) == (8, 4, 4, 8, 8)
    assert info.scaling_factor == pytest.approx(1.0 / float(mu.double().std()), rel=1e-6)
    assert info.latent_std == pytest.approx(1.0, abs=1e-4)
    # the cache holds the encoder's means of the training images (flips of variant 1: h)
    ds = open_dataset(latent2d["ds"])
    rows = ds.table[ds.table["split"] == "train"]
    first = ds.load(rows.iloc[0]).array
    mapping = IntensityMapping.from_dict(b.info.intensity.to_dict())
    ae = load_autoencoder(model)
    x = torch.from_numpy(mapping.from_pixels(first[None]))
    torch.testing.assert_close(ae.encode_mean(x)[0], mu[0, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ae.encode_mean(x.flip(-1))[0], mu[0, 1], rtol=1e-4, atol=1e-5)
    # encode -> decode through the bundle (scaled latents) keeps the [-1, 1] image's shape
    assert b.decode(b.encode(x)).shape == x.shape
    out = json.loads((model / "medsynth.json").read_text())["outputs"]
    lat = out["latent"]
    assert lat["latent_std"] == pytest.approx(1.0, abs=1e-3)
    assert {"psnr_db", "ssim", "split", "train_s", "cache_s"} <= set(lat["autoencoder"])
    assert lat["autoencoder"]["split"].startswith("train")  # the tiny set has no val split
    rec = json.loads((model / "autoencoder" / "config.json").read_text())["medsynth"]
    assert rec["scaling_factor"] == pytest.approx(info.scaling_factor)
    assert rec["spec"]["spatial_dims"] == 2 and rec["steps"] == 4


def test_autoencoder_reuse_and_mismatch(latent2d: dict[str, Path],
                                        prostate16: dict[str, Path]) -> None:
    root = latent2d["root"]
    cfg = tiny_latent(max_steps=1, autoencoder=str(latent2d["full"]))
    out = train(latent2d["ds"], root / "reuse", cfg=cfg, store_path=latent2d["store"],
                progress=False)
    assert not (out / "autoencoder_log.csv").exists()  # not trained again
    wa = load_file(str(latent2d["full"] / "autoencoder" / "model.safetensors"))
    wb = load_file(str(out / "autoencoder" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((out / "medsynth.json").read_text())["outputs"]["latent"]["reused"]
    # a 2D RGB autoencoder on 3D gray volumes (CLI --autoencoder): one clear error, nothing written
    from typer.testing import CliRunner

    from medsynth.cli import app

    bad = root / "bad_reuse"
    recipe = root / "tiny3d.yaml"
    recipe.write_text(tiny_latent(**TINY_3D).to_yaml())
    r = CliRunner().invoke(app, ["train", str(prostate16["ds"]), "--out", str(bad), "--config",
                                 str(recipe), "--autoencoder", str(latent2d["full"])])
    assert r.exit_code == 1 and "3-channel 2D data, the data are 1-channel 3D" in r.output
    assert not bad.exists()
    with pytest.raises(MedsynthError, match="no autoencoder here"):
        train(latent2d["ds"], bad, cfg=tiny_latent(autoencoder=str(root)), progress=False)


def test_dimension_mismatch_is_a_clear_error(rgb16: dict[str, Path],
                                             prostate16: dict[str, Path]) -> None:
    root = rgb16["root"]
    with pytest.raises(MedsynthError, match="holds 2D images but the recipe is for 3D volumes"):
        train(rgb16["ds"], root / "x3", cfg=tiny_latent(**TINY_3D), progress=False)
    with pytest.raises(MedsynthError, match="holds 3D volumes but the recipe is for 2D images"):
        train(prostate16["ds"], root / "x2", cfg=tiny_latent(spatial_dims=2), progress=False)
    with pytest.raises(MedsynthError, match="non-local attention is not offered in 3D"):
        train(prostate16["ds"], root / "x4", cfg=tiny_latent(ae_attention=True, **TINY_3D),
              progress=False)
    with pytest.raises(MedsynthError, match="ae_patch_size .* divisible by 2"):
        train(prostate16["ds"], root / "x5", cfg=tiny_latent(ae_patch_size=[7], **TINY_3D),
              progress=False)
    with pytest.raises(MedsynthError, match="ccella: true predicts the class from the desc"):
        train(rgb16["ds"], root / "x6", cfg=tiny_latent(ccella=True), progress=False)
    assert not any((root / f"x{i}").exists() for i in range(2, 7))


def test_volumes_too_large_for_memory_say_what_to_lower(prostate16: dict[str, Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import medsynth.train.data as data_mod

    monkeypatch.setattr(data_mod, "available_memory_bytes", lambda: 10_000)
    with pytest.raises(MedsynthError, match=r"need .* GiB in memory.*") as e:
        train(prostate16["ds"], prostate16["root"] / "big",
              cfg=tiny_latent(**TINY_3D, data_cache="memory"), progress=False)
    assert "lower shape" in str(e.value.hint) and "9 training volumes of 16x16x16" in str(e.value)
    assert not (prostate16["root"] / "big").exists()
    # data_cache: auto (the default) puts such a set on disk (memory-mapped) and trains
    from medsynth.imaging.dataset import open_dataset

    d = data_mod.load_train_data(open_dataset(prostate16["ds"]), tiny_latent(**TINY_3D),
                                 progress=False)
    assert isinstance(d.pixels, np.memmap)


def test_autoencoder_cosine_schedule(rgb16: dict[str, Path], tmp_path: Path) -> None:
    """ae_lr_schedule: cosine decays the autoencoder's learning rate to 0 at ae_max_steps (the
    log records it); constant keeps it; an unknown schedule is refused."""
    lrs = {}
    for kind in ("cosine", "constant"):
        out = tmp_path / kind
        train(rgb16["ds"], out, cfg=tiny_latent(ae_lr_schedule=kind, max_steps=1),
              store_path=rgb16["store"], progress=False)
        lrs[kind] = [float(r["lr"]) for r in _rows(out / "autoencoder_log.csv")]
    cos, const = lrs["cosine"], lrs["constant"]
    assert all(a > b for a, b in zip(cos[:-1], cos[1:], strict=True)), cos
    assert cos[-1] < 0.5 * cos[0], cos
    assert len(set(const)) == 1, const
    with pytest.raises(MedsynthError, match="ae_lr_schedule must be one of cosine, constant"):
        tiny_latent(ae_lr_schedule="linear")
