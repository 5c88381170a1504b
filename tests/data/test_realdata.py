"""Real clinical files through data import: geometry through resizing, mixed sets, modality.

Files: pydicom-data's real CT (693_*), MR, CR and multi-frame objects, nilearn's MNI152 volume.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.ingest import ImportConfig, import_dataset
from medsynth.errors import MedsynthError
from medsynth.imaging.dataset import finish_dataset, open_dataset
from medsynth.imaging.readers import read_image
from medsynth.imaging.save import save_nifti, save_png
from medsynth.imaging.transforms import fit_to_size, resample_affine, resample_spacing

runner = CliRunner()


def _centre_world(affine: np.ndarray, shape_xyz: tuple[int, ...]) -> np.ndarray:
    return (affine @ np.r_[(np.array(shape_xyz, dtype=float) - 1) / 2, 1.0])[:3]


def _copy(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(src / n, dst / n)
    return dst


def test_ct_slice_resized_to_32_claims_7_7_mm_and_keeps_its_place(pydicom_data_dir: Path,
                                                                   tmp_path: Path) -> None:
    _copy(pydicom_data_dir, tmp_path / "ct" / "head", ["693_UNCR.dcm"])
    orig = read_image(pydicom_data_dir / "693_UNCR.dcm")
    assert orig.spacing == pytest.approx((0.478516, 0.478516)) and orig.affine is not None
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "ct"), str(tmp_path / "ds"), size=32))
    img = ds.load(0)
    assert img.array.shape == (1, 32, 32) and img.array.dtype == np.int16  # HU, signed
    assert img.spacing == pytest.approx((0.478516 * 16, 0.478516 * 16))  # ~7.66 mm
    assert ds.table.loc[0, "spacing"].startswith("7.656") and ds.modality == "CT"
    nii = nib.load(ds.root / ds.table.loc[0, "path"])
    assert nii.header.get_zooms()[:2] == pytest.approx((7.656256, 7.656256))
    assert nii.get_data_dtype() == np.int16
    # the image centre stays where it was in the patient (square image: pad adds nothing)
    np.testing.assert_allclose(_centre_world(nii.affine, (32, 32, 1)),
                               _centre_world(orig.affine, (512, 512, 1)), atol=1e-3)
    # HU survive (up to resampling): air and bone are still there, nothing beyond the source range
    a = img.array
    assert a.min() >= orig.array.min() and a.max() <= orig.array.max() and a.min() < -900


def test_resample_geometry_of_pad_and_crop() -> None:
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    # (rows, cols) 12 x 40 padded: 6 x 20 at 4 x 1 mm, 7 rows of padding above and below;
    # 10 x 40 cropped: 20 x 80 at 1 x 0.25 mm, 30 columns cut on each side
    for rows, mode, want in ((12, "pad", (4.0, 1.0)), (10, "crop", (1.0, 0.25))):
        _, r = fit_to_size(np.zeros((1, rows, 40), dtype=np.float32), 20, mode)
        sp = resample_spacing((2.0, 0.5), r)
        aff = resample_affine(affine, r)
        assert sp == pytest.approx(want)
        np.testing.assert_allclose(np.abs(np.diag(aff)[:2]), [sp[1], sp[0]])
        # symmetric padding/cropping: the field of view's centre does not move
        np.testing.assert_allclose(_centre_world(aff, (20, 20, 1)), _centre_world(affine, (40, rows, 1)))
    # asymmetric padding (5 rows in 20: 7 above, 8 below): the content still maps back exactly
    _, r = fit_to_size(np.zeros((1, 10, 40), dtype=np.float32), 20, "pad")
    aff = resample_affine(affine, r)
    old_centre = affine @ [19.5, 4.5, 0, 1]  # (column, row) centre of the old image
    np.testing.assert_allclose(aff @ [9.5, 7 + 2, 0, 1], old_centre)


def test_resize_clips_ringing_to_the_source_range() -> None:
    # a sharp edge in float data (MR with a fractional slope): Lanczos overshoots below 0
    a = np.zeros((1, 64, 64), dtype=np.float32)
    a[:, :, 32:] = 600.5
    out, _ = fit_to_size(a, 16)
    assert out.min() >= 0.0 and out.max() <= 600.5


def test_mni_volume_resized_keeps_spacing_and_affine(mni_t1: Path, tmp_path: Path) -> None:
    _copy(mni_t1.parent, tmp_path / "src" / "brain", [mni_t1.name])
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"), size=32,
                                        modality="MR"))
    assert ds.manifest.outputs["spatial_dims"] == 3 and ds.modality == "MR"
    img = ds.load(0)
    assert img.array.shape == (1, 32, 32, 32)  # --size is not ignored for volumes
    a, b = nib.load(mni_t1), nib.load(ds.root / ds.table.loc[0, "path"])
    # 197 x 233 x 189 at 1 mm, longest side 233 -> 32: about 7.3 mm voxels on every axis
    assert np.array(b.header.get_zooms()) == pytest.approx([197 / 27, 233 / 32, 189 / 26], rel=1e-3)
    assert img.spacing == pytest.approx(tuple(reversed(b.header.get_zooms())), rel=1e-5)

    def com(im: nib.Nifti1Image) -> np.ndarray:
        d = np.asarray(im.dataobj, dtype=np.float64)
        idx = np.indices(d.shape).reshape(3, -1)
        return (im.affine @ np.r_[(idx * d.reshape(-1)).sum(1) / d.sum(), 1])[:3]

    # the brain is where it was in MNI space (centre of mass within 1 mm)
    np.testing.assert_allclose(com(b), com(a), atol=1.0)
    r = runner.invoke(app, ["data", "info", str(ds.root)])
    assert r.exit_code == 0 and "D x H x W" in r.output and "32x32x32" in r.output


def test_nifti_volume_is_not_labelled_mr_unless_asked(mni_t1: Path, tmp_path: Path) -> None:
    assert read_image(mni_t1).modality == "OT"
    _copy(mni_t1.parent, tmp_path / "src" / "brain", [mni_t1.name])
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"), size=16))
    assert ds.modality == "OT"


def test_slices_of_a_multiframe_mr_and_a_volume(pydicom_data_dir: Path, mni_t1: Path,
                                                 tmp_path: Path) -> None:
    _copy(pydicom_data_dir, tmp_path / "src" / "mr", ["emri_small.dcm"])
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"), slices=True))
    assert len(ds.table) == 10 and ds.manifest.outputs["spatial_dims"] == 2
    assert ds.load(0).array.shape == (1, 64, 64) and ds.modality == "MR"
    assert ds.table["source"].str.contains("slice=9").any()
    # a NIfTI volume cut into slices: each slice sits at its own z in the world
    vol = tmp_path / "vol" / "brain"
    vol.mkdir(parents=True)
    small = np.asarray(nib.load(mni_t1).dataobj)[::8, ::8, ::8]
    aff = nib.load(mni_t1).affine @ np.diag([8, 8, 8, 1.0])
    nib.save(nib.Nifti1Image(small, aff), vol / "b.nii.gz")
    ds2, _ = import_dataset(ImportConfig(str(tmp_path / "vol"), str(tmp_path / "ds2"), slices=True))
    assert len(ds2.table) == small.shape[2]
    for k in (0, 5):
        row = ds2.table[ds2.table["image_id"] == f"brain__b_s{k:03d}"].iloc[0]
        assert row["path"].endswith(".png")  # uint8 slices: PNG, the affine in labels.csv
        slice_affine = ds2.load(row).affine
        np.testing.assert_allclose(slice_affine[:3, 3], (aff @ [0, 0, k, 1])[:3])
        np.testing.assert_allclose(slice_affine[:3, :3], aff[:3, :3])
        np.testing.assert_array_equal(ds2.load(row).array[0].T, small[:, :, k])


def test_mixed_real_set_named_refused_and_decided(pydicom_data_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "mixed"
    _copy(pydicom_data_dir, src / "ct", ["693_UNCR.dcm"])
    _copy(pydicom_data_dir, src / "mr", ["MR2_UNCR.dcm"])
    _copy(pydicom_data_dir, src / "cr", ["RG3_UNCR.dcm"])
    _copy(pydicom_data_dir, src / "mf", ["emri_small.dcm"])
    # the multi-frame file is named (not a message without a file), with the way out
    with pytest.raises(MedsynthError, match="emri_small.dcm") as e:
        import_dataset(ImportConfig(str(src), str(tmp_path / "a"), size=16))
    assert "--slices" in str(e.value) and "--skip-bad" in str(e.value)
    assert not (tmp_path / "a").exists()
    # skipped with --skip-bad; then CR display values, CT HU and MR float have no common scale:
    # refused at import (not late in train), with --dtype/--voi advice
    with pytest.raises(MedsynthError, match="no common representation") as e:
        import_dataset(ImportConfig(str(src), str(tmp_path / "b"), size=16, skip_bad=True))
    assert "--dtype" in str(e.value) and "--voi" in str(e.value)
    ds, bad = import_dataset(ImportConfig(str(src), str(tmp_path / "c"), size=16, skip_bad=True,
                                          dtype="float32"))
    assert len(bad) == 1 and "emri_small.dcm" in bad[0]
    assert ds.dtype == "float32" and {str(ds.load(i).array.dtype) for i in range(3)} == {"float32"}
    # the real modalities are kept per image; the set is OT as a whole, with a note
    assert sorted(ds.table["modality"]) == ["CR", "CT", "MR"] and ds.modality == "OT"
    assert ds.manifest.outputs["modalities"] == {"CR": 1, "CT": 1, "MR": 1}
    assert any("--modality" in n for n in ds.manifest.outputs["notes"])
    ct = ds.load(ds.table.index[ds.table["modality"] == "CT"][0])
    assert ct.array.min() < -1000 and ct.modality == "CT"  # HU kept exactly in float32


def test_ct_slices_stored_unsigned_and_signed_join_as_int16(tmp_path: Path) -> None:
    import pydicom.data

    base = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    files = sorted(p for p in base.glob("*/CT*/*") if p.is_file())
    assert {str(read_image(p).array.dtype) for p in files} == {"int16", "uint16"}
    src = tmp_path / "ct" / "slice"
    src.mkdir(parents=True)
    for p in files:
        shutil.copy(p, src / f"{p.name}.dcm")
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "ct"), str(tmp_path / "ds")))
    assert ds.dtype == "int16" and ds.modality == "CT"
    for i in range(len(ds.table)):
        src_file = src / Path(ds.table.loc[i, "source"]).name
        np.testing.assert_array_equal(ds.load(i).array, read_image(src_file).array)


def test_8bit_joins_16bit_widened_and_dtype_option(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save_png(np.array([[[0, 128, 255]]], dtype=np.uint8), src / "a" / "x8.png")
    save_png(np.array([[[0, 1000, 65535]]], dtype=np.uint16), src / "a" / "x16.png")
    ds, _ = import_dataset(ImportConfig(str(src), str(tmp_path / "ds")))
    assert ds.dtype == "uint16" and "widened" in ds.manifest.outputs["notes"][0]
    arrays = {Path(ds.table.loc[i, "path"]).stem: ds.load(i).array for i in range(2)}
    np.testing.assert_array_equal(arrays["x8"], [[[0, 128 * 257, 65535]]])
    with pytest.raises(MedsynthError, match=r"x16.png.*do not fit uint8"):
        import_dataset(ImportConfig(str(src), str(tmp_path / "ds2"), dtype="uint8"))
    r = runner.invoke(app, ["data", "import", str(src), "--out", str(tmp_path / "ds3"),
                            "--dtype", "int8"])
    assert r.exit_code == 2 and "--dtype" in r.output


def test_mr_float_rounds_with_dtype(pydicom_data_dir: Path, tmp_path: Path) -> None:
    _copy(pydicom_data_dir, tmp_path / "mr" / "brain", ["MR2_UNCR.dcm"])
    orig = read_image(pydicom_data_dir / "MR2_UNCR.dcm").array
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "mr"), str(tmp_path / "ds"), dtype="uint16"))
    a = ds.load(0).array
    assert a.dtype == np.uint16 and np.abs(a.astype(float) - orig).max() <= 0.5


def test_train_refuses_mixed_types_with_the_fix(tmp_path: Path) -> None:
    """A dataset written before import chose one type: train says how to fix it."""
    import pandas as pd

    from medsynth.train.config import TrainConfig
    from medsynth.train.data import load_train_data

    root = tmp_path / "old"
    save_png(np.zeros((1, 8, 8), np.uint16), root / "images" / "a" / "0.png")
    save_nifti(np.full((1, 8, 8), -5, np.int16), root / "images" / "a" / "1.nii.gz")
    rows = [{"image_id": f"a_{i}", "path": p, "class": "a", "split": "train"}
            for i, p in enumerate(["images/a/0.png", "images/a/1.nii.gz"])]
    ds = finish_dataset(root, pd.DataFrame(rows), config={}, channels=1, dtype="int16", modality="OT")
    with pytest.raises(MedsynthError, match="mixed pixel types") as e:
        load_train_data(ds, TrainConfig(), progress=False)
    assert "medsynth data import" in str(e.value) and "--dtype" in str(e.value)


def test_reimport_of_a_dataset_keeps_geometry_and_modality(pydicom_data_dir: Path, tmp_path: Path) -> None:
    import pydicom.data

    _copy(Path(pydicom.data.get_testdata_file("MR_small.dcm")).parent, tmp_path / "mr" / "brain",
          ["MR_small.dcm"])
    first, _ = import_dataset(ImportConfig(str(tmp_path / "mr"), str(tmp_path / "ds")))
    again, _ = import_dataset(ImportConfig(str(first.root), str(tmp_path / "ds2"), size=32))
    assert again.modality == "MR"
    assert again.load(0).spacing == pytest.approx((0.625, 0.625))  # 0.3125 mm x 64/32
    assert open_dataset(again.root).attribute_columns == []


def test_csv_modality_column_and_option(tmp_path: Path) -> None:
    import pandas as pd

    save_png(np.zeros((1, 8, 8), np.uint16), tmp_path / "a.png")
    save_png(np.ones((1, 8, 8), np.uint16), tmp_path / "b.png")
    pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"], "modality": ["dx", "DX"]}) \
        .to_csv(tmp_path / "l.csv", index=False)
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "l.csv"), str(tmp_path / "ds")))
    assert ds.modality == "DX" and ds.attribute_columns == []
    ds2, _ = import_dataset(ImportConfig(str(tmp_path / "l.csv"), str(tmp_path / "ds2"), modality="cr"))
    assert ds2.modality == "CR" and set(ds2.table["modality"]) == {"CR"}
    with pytest.raises(MedsynthError, match="modality"):
        ImportConfig(str(tmp_path / "l.csv"), str(tmp_path / "ds3"), modality="chest x-ray")
