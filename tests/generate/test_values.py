"""Signed and real-valued images through every writer, and a real CT set through generate.

CT Hounsfield units (int16) must survive PNG (16-bit + rescale chunk), DICOM (signed pixels,
Modality LUT) and NIfTI (int16) exactly; float32 values to within half a stored step; spacing
and affine from the model reach DICOM Pixel Spacing and the NIfTI affine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import MedsynthError
from medsynth.generate.writers.dicom import DicomRunInfo, write_dicom
from medsynth.generate.writers.nifti import write_nifti
from medsynth.generate.writers.png import write_png
from medsynth.imaging.readers import read_image
from medsynth.imaging.storage import PNG_TEXT_KEY, Rescale
from tests.generate.test_writers import assert_valid_dicom

runner = CliRunner()
FULL_INT16 = np.array([[[-32768, -3024, -1024, -1], [0, 1, 3071, 32767]]], dtype=np.int16)


def test_rescale_maps() -> None:
    ct = Rescale.for_values("int16", -1000, 3000, "CT")
    assert (ct.slope, ct.intercept, ct.unit) == (1.0, -1024.0, "HU")
    assert Rescale.for_values("int16", -3024, 1468, "CT").intercept == -3024.0
    assert Rescale.for_values("int16", -32768, 32767).intercept == -32768.0
    assert Rescale.for_values("uint16", 0, 4095) is None and Rescale.for_values("uint8", 0, 255) is None
    full = Rescale.for_values("int16", -32768, 32767)
    np.testing.assert_array_equal(full.to_values(full.to_stored(FULL_INT16)), FULL_INT16)
    f = Rescale.for_values("float32", -2.5, 600.25)
    v = np.linspace(-2.5, 600.25, 1001, dtype=np.float32)
    assert np.abs(f.to_values(f.to_stored(v)) - v).max() <= f.slope / 2 + 1e-4
    assert Rescale.from_text(ct.to_text()) == ct and ct.describe() == "HU = stored * 1 + -1024"


def test_png_of_hounsfield_units_round_trips(tmp_path: Path) -> None:
    from PIL import Image

    r = Rescale.for_values("int16", -32768, 32767, "CT")
    p = write_png(FULL_INT16, tmp_path / "ct.png", rescale=r)
    im = Image.open(p)
    assert im.mode.startswith("I;16") and json.loads(im.text[PNG_TEXT_KEY])["unit"] == "HU"
    back = read_image(p)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, FULL_INT16)
    with pytest.raises(ValueError, match="rescale"):
        write_png(FULL_INT16, tmp_path / "x.png")


def test_dicom_signed_ct_and_float_mr(tmp_path: Path) -> None:
    run = DicomRunInfo.new(["head"], modality="CT", model_name="m")
    p = write_dicom(FULL_INT16, tmp_path / "ct.dcm", run=run, cls="head", sample_id="head-000000",
                    instance_number=1, description="axial head CT", seed=1, spacing=(7.65, 7.65))
    assert_valid_dicom(p)  # dciodvfy: no errors
    ds = pydicom.dcmread(p)
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16 and ds.Modality == "CT"
    assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == 0 and ds.RescaleType == "HU"
    np.testing.assert_array_equal(ds.pixel_array, FULL_INT16[0])  # signed pixels = HU
    np.testing.assert_array_equal(read_image(p).array, FULL_INT16)
    assert [float(v) for v in ds.PixelSpacing] == [7.65, 7.65]

    mr_run = DicomRunInfo.new(["t1"], modality="MR", model_name="m")
    values = np.linspace(-2.5, 600.25, 24, dtype=np.float32).reshape(1, 4, 6)
    r = Rescale.for_values("float32", -2.5, 600.25, "MR")
    q = write_dicom(values, tmp_path / "mr.dcm", run=mr_run, cls="t1", sample_id="t1-000000",
                    instance_number=1, description="", rescale=r)
    assert_valid_dicom(q)
    ds = pydicom.dcmread(q)
    assert ds.PixelRepresentation == 0 and ds.RescaleType == "US"
    assert np.abs(read_image(q).array - values).max() <= r.slope / 2 + 1e-4


def test_nifti_keeps_int16_and_the_affine(tmp_path: Path) -> None:
    affine = np.array([[-0.5, 0, 0, 10], [0, -0.6, 0, 20], [0, 0, 5, -30], [0, 0, 0, 1.0]])
    p = write_nifti(FULL_INT16, tmp_path / "ct.nii.gz", spacing=(0.6, 0.5), affine=affine)
    img = nib.load(p)
    assert img.get_data_dtype() == np.int16 and img.header.get_slope_inter() in ((1.0, 0.0), (None, None))
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(img.header.get_zooms(), (0.5, 0.6, 5.0))
    np.testing.assert_array_equal(read_image(p).array, FULL_INT16)


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory: pytest.TempPathFactory, pydicom_data_dir: Path) -> Path:
    """A model trained (3 steps) by ``medsynth train`` on real CT slices imported at 16 px."""
    import pydicom.data

    from medsynth.data.ingest import ImportConfig, import_dataset
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import train

    root = tmp_path_factory.mktemp("ct")
    test_files = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    for cls, files in (("head", [pydicom_data_dir / "693_UNCR.dcm", pydicom_data_dir / "693_J2KR.dcm",
                                 pydicom_data_dir / "693_UNCI.dcm"]),
                       ("body", [test_files / "CT_small.dcm", pydicom_data_dir / "bad_sequence.dcm",
                                 pydicom_data_dir / "explicit_VR-UN.dcm"])):
        (root / "src" / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / "src" / cls / f.name)
    ds, _ = import_dataset(ImportConfig(str(root / "src"), str(root / "ds"), size=16,
                                        val_fraction=0, test_fraction=0))
    assert ds.dtype == "int16" and ds.modality == "CT"
    cfg = TrainConfig(block_out_channels=[16, 32], attention_levels=[False, True], max_steps=3,
                      batch_size=4, warmup_steps=1, prototypes_per_class=4, checkpoint_every=3,
                      log_every=1, sample_every=0, sample_per_class=1, sample_steps=2, num_threads=1)
    return train(ds.root, root / "model", cfg=cfg, progress=False)


def test_ct_model_records_hu_range_and_spacing(ct_model: Path) -> None:
    info = json.loads((ct_model / "medsynth_model.json").read_text())
    assert info["dtype"] == "int16" and info["intensity"]["low"] < -1000
    # median over 693 (0.4785 mm x 512/16) x3, CT_small (0.661 x 128/16), 0.287 and 0.859 x 32
    assert info["spacing"] == pytest.approx([0.478516 * 32] * 2, rel=1e-4)
    assert info["affine"] is None  # the slices have different orientations/no common one


def test_generate_ct_in_every_format_round_trips_hu(ct_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    r = runner.invoke(app, ["generate", str(ct_model), "--n", "2", "--out", str(out),
                            "--format", "png,dicom,nifti", "--steps", "2", "--threads", "1"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    outputs = json.loads((out / "medsynth.json").read_text())["outputs"]
    assert outputs["values"]["png"]["unit"] == "HU" and outputs["values"]["unit"] == "HU"
    assert outputs["values"]["dicom"]["pixel_representation"] == 1
    assert outputs["threads"] == 1 and outputs["spacing"] == pytest.approx([15.312512] * 2)
    intercept = outputs["values"]["png"]["intercept"]
    assert (table["png_values"] == f"HU = stored * 1 + {intercept:.9g}").all()
    for row in table.itertuples():
        png, dcm, nii = (read_image(out / p).array for p in (row.png, row.dicom, row.nifti))
        assert png.dtype == dcm.dtype == nii.dtype == np.int16
        np.testing.assert_array_equal(png, dcm)
        np.testing.assert_array_equal(png, nii)
        assert_valid_dicom(out / row.dicom)
        ds = pydicom.dcmread(out / row.dicom)
        assert ds.RescaleType == "HU" and [float(v) for v in ds.PixelSpacing] == pytest.approx(
            [15.312512] * 2)
        assert nib.load(out / row.nifti).header.get_zooms()[:2] == pytest.approx((15.312512,) * 2)


def test_model_affine_reaches_the_nifti_writer(ct_model: Path, tmp_path: Path) -> None:
    """A model with an orientation (as train records it for consistent data) and --spacing."""
    model = tmp_path / "model"
    shutil.copytree(ct_model, model)
    info = json.loads((model / "medsynth_model.json").read_text())
    affine = [[-2.0, 0, 0, 15.0], [0, -2.0, 0, 15.0], [0, 0, 5.0, 0], [0, 0, 0, 1]]
    info["affine"], info["spacing"] = affine, [2.0, 2.0]
    (model / "medsynth_model.json").write_text(json.dumps(info))
    for extra, zoom in (([], 2.0), (["--spacing", "1.5,1.5"], 1.5)):
        out = tmp_path / f"synth{zoom}"
        r = runner.invoke(app, ["generate", str(model), "--n", "1", "--class", "head", "--out",
                                str(out), "--format", "nifti", "--steps", "1", *extra])
        assert r.exit_code == 0, r.output
        nii = nib.load(next((out / "nifti").rglob("*.nii.gz")))
        want = np.array(affine)
        want[:2, :2] *= zoom / 2.0
        want[:2, 3] = [7.5 * zoom, 7.5 * zoom]  # still centred on the world origin
        np.testing.assert_allclose(nii.affine, want, atol=1e-6)


def test_a_class_named_all_is_selectable(tmp_path: Path) -> None:
    from medsynth.generate.conditioning import requests_from_options

    classes = ["all", "none"]
    assert [r.cls for r in requests_from_options(["all"], classes, 1, None)] == ["all"]
    assert [r.cls for r in requests_from_options(["*"], classes, 1, None)] == ["all", "none"]
    assert [r.cls for r in requests_from_options(["all"], ["a", "b"], 1, None)] == ["a", "b"]
    assert [r.cls for r in requests_from_options(["none,all"], classes, 1, None)] == ["none", "all"]


def test_threads_default_and_option(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from medsynth import threads

    monkeypatch.delenv("MEDSYNTH_THREADS", raising=False)  # the suite pins it (conftest)
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (5.2, 0, 0))
    assert threads.default_threads() == 3  # 8 CPUs, 5.2 busy
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (30.0, 0, 0))
    assert threads.default_threads() == 1
    monkeypatch.setenv("MEDSYNTH_THREADS", "5")  # the environment wins over the load
    assert threads.default_threads() == 5
    monkeypatch.setenv("MEDSYNTH_THREADS", "many")
    with pytest.raises(MedsynthError, match="MEDSYNTH_THREADS='many'"):
        threads.default_threads()
    monkeypatch.delenv("MEDSYNTH_THREADS")
    before = torch.get_num_threads()
    with threads.torch_threads(2) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    r = runner.invoke(app, ["generate", "nowhere", "--out", "x", "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output
