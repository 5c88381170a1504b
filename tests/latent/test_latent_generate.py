"""train -> generate for latent models: 2D (rectified flow) and 3D (NIfTI + DICOM, affine kept)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import MedsynthError
from medsynth.imaging.readers import read_image
from medsynth.models.bundle import load_bundle
from medsynth.models.sampler import denoise
from medsynth.threads import torch_threads
from tests.generate.test_writers import assert_valid_dicom
from tests.latent.conftest import TINY_3D, tiny_latent

runner = CliRunner()


def _ok(args: list[str]) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def model3d(prostate16: dict[str, Path]) -> Path:
    """A 3D latent model on the 16^3 phantoms (autoencoder trained long enough to decode)."""
    root = prostate16["root"]
    recipe = root / "tiny3d.yaml"
    recipe.write_text(tiny_latent(**TINY_3D, ae_max_steps=60, ae_lr=2e-3, ae_log_every=20,
                                  ae_checkpoint_every=60, max_steps=2).to_yaml())
    _ok(["train", prostate16["ds"], "--store", prostate16["store"], "--out", root / "m3d",
         "--config", recipe])
    return root / "m3d"


def test_3d_latent_end_to_end_nifti_and_dicom(model3d: Path, prostate16: dict[str, Path]) -> None:
    b = load_bundle(model3d)
    assert b.spatial_dims == 3 and b.latent and b.sample_shape == (4, 8, 8, 8)
    assert b.shape == (16, 16, 16) and b.modality == "MR" and b.dtype == "uint16"
    out = prostate16["root"] / "synth3d"
    _ok(["generate", model3d, "--out", out, "--class", "pirads_4_5", "--n", "2", "--steps", "3",
         "--sampler", "ddim", "--format", "nifti,dicom", "--batch-size", "1"])
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert len(table) == 2 and (table["description"] != "").all()
    assert (table["class_input"] == "id").all()
    # the NIfTI carries the training volumes' affine (phantom: RAS, 4 mm voxels, centred)
    train_nii = nib.load(str(next((prostate16["ds"] / "images").rglob("*.nii.gz"))))
    row = table.iloc[1]
    nii = nib.load(str(out / row["nifti"]))
    np.testing.assert_allclose(nii.affine, train_nii.affine, atol=1e-6)
    np.testing.assert_allclose(nii.affine, b.affine, atol=1e-6)
    assert nii.shape == (16, 16, 16) and nii.get_data_dtype() == np.uint16
    # the DICOM series reads back as the same voxels and geometry
    vol = read_image(out / row["dicom"])
    assert vol.array.shape == (1, 16, 16, 16)
    np.testing.assert_array_equal(vol.array, read_image(out / row["nifti"]).array)
    np.testing.assert_allclose(vol.affine, nii.affine, atol=1e-4)
    # the report as a DICOM SR about the volume's slices, as every DICOM image gets one
    assert row["sr"] and (out / row["sr"]).is_file()
    assert_valid_dicom(out / row["sr"])
    # the same volume by hand through the shared sampler and the decode hook, at the threads
    # and batch size samples.csv records (bitwise only then: docs/generate.md, Reproducibility)
    assert row["batch"] == 1
    with torch_threads(int(row["threads"])):
        h, m = b.encode_text([row["description"]], classes=[int(row["class_id"])])
        nh, nm = b.encode_text([""])
        x = denoise(b.denoiser, b.make_scheduler("ddim"), class_ids=[int(row["class_id"])],
                    text_hidden=h, text_mask=m, null_class=b.null_class, null_hidden=nh,
                    null_mask=nm, seeds=[int(row["seed"])], sample_shape=b.sample_shape,
                    steps=3, guidance=float(row["guidance"]), decode=b.decode_hook())
    np.testing.assert_array_equal(b.to_pixels(x)[0], vol.array)


def test_3d_generate_refuses_png_and_scales_spacing(model3d: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["generate", str(model3d), "--out", str(tmp_path / "p"), "--n", "1",
                            "--format", "png"])
    assert r.exit_code == 2 and "PNG holds 2D images" in r.output
    r = runner.invoke(app, ["generate", str(model3d), "--out", str(tmp_path / "s2"), "--n", "1",
                            "--format", "nifti", "--spacing", "1,1"])
    assert r.exit_code != 0 and "three numbers" in r.output
    out = tmp_path / "sp"
    _ok(["generate", model3d, "--out", out, "--class", "no_lesion", "--n", "1", "--steps", "2",
         "--format", "nifti", "--spacing", "3,2,2"])
    nii = nib.load(str(next(out.rglob("*.nii.gz"))))
    assert nii.header.get_zooms()[:3] == pytest.approx((2.0, 2.0, 3.0))
    b = load_bundle(model3d)
    centre = np.array([7.5, 7.5, 7.5, 1.0])
    np.testing.assert_allclose(nii.affine @ centre, b.affine @ centre, atol=1e-6)


def test_sliding_window_decode_matches_full_decode(model3d: Path,
                                                   prostate16: dict[str, Path]) -> None:
    """Windowed decoding (MONAI sliding windows over the latent, gaussian blending) gives the
    whole-volume decode back within tolerance (GroupNorm statistics are per window), and a
    reconstruction as good."""
    from medsynth.imaging.dataset import open_dataset

    b = load_bundle(model3d)
    ae = b.autoencoder()
    ds = open_dataset(prostate16["ds"])
    x = torch.cat([b.from_pixels(ds.load(i).array[None]) for i in range(3)])
    z = b.encode(x)
    full = b.decode(z, window=0)
    win = b.decode(z, window=6)
    assert win.shape == full.shape == x.shape
    psnr_agree = 10 * torch.log10(4.0 / ((win - full) ** 2).mean())
    assert psnr_agree > 25.0, float(psnr_agree)

    def psnr(a: torch.Tensor) -> float:
        return float(10 * torch.log10(4.0 / ((a.clamp(-1, 1) - x) ** 2).mean()))

    assert psnr(win) > psnr(full) - 1.5, (psnr(win), psnr(full))
    # auto: a budget too small for the whole volume picks a window, and the result is close
    small = ae.auto_window((8, 8, 8), budget_gib=2e-4)
    assert 4 <= small < 8
    assert ae.auto_window((8, 8, 8)) == 0


@pytest.fixture(scope="module")
def rflow2d(rgb16: dict[str, Path]) -> Path:
    root = rgb16["root"]
    recipe = root / "rflow.yaml"
    recipe.write_text(tiny_latent(noise_schedule="rflow", max_steps=3).to_yaml())
    _ok(["train", rgb16["ds"], "--store", rgb16["store"], "--out", root / "rf", "--config",
         recipe])
    return root / "rf"


def test_2d_latent_rflow_end_to_end(rflow2d: Path, tmp_path: Path) -> None:
    b = load_bundle(rflow2d)
    assert b.latent and b.info.noise_schedule.kind == "rflow" and b.sample_shape == (4, 8, 8)
    # an rflow model takes only the rflow sampler, and says so
    r = runner.invoke(app, ["generate", str(rflow2d), "--out", str(tmp_path / "x"), "--n", "1"])
    assert r.exit_code == 2 and "--sampler rflow" in r.output
    out = tmp_path / "synth"
    _ok(["generate", rflow2d, "--out", out, "--class", "all", "--n", "2", "--steps", "4",
         "--sampler", "rflow", "--format", "png,nifti", "--batch-size", "1"])
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert len(table) == 4 and set(table["sampler"]) == {"rflow"}
    from PIL import Image

    row = table.iloc[2]
    png = np.moveaxis(np.asarray(Image.open(out / row["png"])), -1, 0)
    assert png.shape == (3, 16, 16) and png.dtype == np.uint8
    with torch_threads(int(row["threads"])):  # as recorded: bitwise at the same threads
        h, m = b.encode_text([row["description"]], classes=[int(row["class_id"])])
        nh, nm = b.encode_text([""])
        x = denoise(b.denoiser, b.make_scheduler("rflow"), class_ids=[int(row["class_id"])],
                    text_hidden=h, text_mask=m, null_class=b.null_class, null_hidden=nh,
                    null_mask=nm, seeds=[int(row["seed"])], sample_shape=b.sample_shape,
                    steps=4, guidance=float(row["guidance"]), decode=b.decode_hook())
    np.testing.assert_array_equal(b.to_pixels(x)[0], png)
    with pytest.raises(MedsynthError, match="trained with rectified flow"):
        b.make_scheduler("dpmsolver++")


def _init_distance(out: Path, ds_path: Path) -> tuple[list[str], float]:
    """Mean absolute difference (in [0, 1] of the stored range) between each generated image and
    its recorded source image."""
    from medsynth.imaging.dataset import open_dataset

    ds = open_dataset(ds_path)
    rows = {r.image_id: r for _, r in ds.table.iterrows()}
    t = pd.read_csv(out / "samples.csv", keep_default_na=False)
    col = "nifti" if "nifti" in t and (t["nifti"] != "").all() else "png"
    d = []
    for path, src in zip(t[col], t["init_image_id"], strict=True):
        a = read_image(out / path).array.astype(float)
        b = ds.load(rows[src]).array.astype(float)
        d.append(np.abs(a - b).mean() / max(b.max(), 1.0))
    return list(t["init_image_id"]), float(np.mean(d))


def test_image_prompts_on_latent_models(model3d: Path, prostate16: dict[str, Path],
                                        rflow2d: Path, rgb16: dict[str, Path],
                                        tmp_path: Path) -> None:
    """--init-images on latent models: the source is encoded by the autoencoder, noised to the
    strength and denoised; a small strength stays near the source, a large one moves away.
    3D (DDIM) through the CLI on the volumes; 2D rectified flow in latent space (its fixture's
    autoencoder is too briefly trained for pixel distances to mean anything)."""
    dist, sources = {}, None
    for s in ("0.1", "0.9"):
        out = tmp_path / f"3d-{s}"
        _ok(["generate", model3d, "--out", out, "--class", "pirads_3", "--n", "2", "--steps",
             "10", "--sampler", "ddim", "--format", "nifti", "--guidance", "1",
             "--init-images", prostate16["ds"], "--strength", s])
        src, dist[s] = _init_distance(out, prostate16["ds"])
        assert all(src) and (sources is None or src == sources)
        sources = src
    assert dist["0.1"] < dist["0.9"], dist
    from medsynth.imaging.dataset import open_dataset

    b = load_bundle(rflow2d)
    ds = open_dataset(rgb16["ds"])
    z0 = b.encode(torch.cat([b.from_pixels(ds.load(i).array[None]) for i in range(2)]))
    h, m = b.encode_text(["a lesion", "a lesion"], classes=[0, 0])
    nh, nm = b.encode_text([""])
    lat = {}
    for s in (0.1, 0.9):
        z = denoise(b.denoiser, b.make_scheduler("rflow"), class_ids=[0, 0], text_hidden=h,
                    text_mask=m, null_class=b.null_class, null_hidden=nh, null_mask=nm,
                    seeds=[1, 2], sample_shape=b.sample_shape, steps=10, guidance=1.0,
                    init=z0, strength=s)
        lat[s] = float((z - z0).abs().mean())
    assert lat[0.1] < lat[0.9], lat
