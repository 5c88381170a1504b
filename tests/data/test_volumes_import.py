"""Real volumes at import: affines kept (oblique too), one orientation and spacing per set
(refused with the way out, or reoriented / resampled), crop/pad to a shape, intensity
normalisation by modality, DICOM series folders as volumes.

Volumes: nilearn's MNI152 T1 / grey-matter / white-matter templates (shipped files, offline),
downsampled; oblique and LPS copies constructed here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medsynth.data.ingest import ImportConfig, import_dataset
from medsynth.errors import BadUsageError, MedsynthError


def _mni(mni_t1: Path, kind: str = "t1", step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    path = mni_t1 if kind == "t1" else mni_t1.with_name(mni_t1.name.replace("_t1_", f"_{kind}_"))
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)[::step, ::step, ::step]
    return np.ascontiguousarray(data), img.affine @ np.diag([step, step, step, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


def _centre_of_mass(ds, row) -> np.ndarray:  # type: ignore[no-untyped-def]
    """World position (mm) of a dataset image's intensity centre of mass (array order -> ijk)."""
    from scipy import ndimage as ndi

    img = ds.load(row)
    k, j, i = ndi.center_of_mass(img.array[0].astype(np.float64))
    return (img.affine @ [i, j, k, 1.0])[:3]


def test_oblique_and_mni_affines_kept(mni_t1: Path, tmp_path: Path) -> None:
    t1, aff = _mni(mni_t1)
    oblique = aff.copy()
    oblique[:3, :3] = _rotation((1, 2, 0.5), 23) @ aff[:3, :3]
    _save(tmp_path / "src" / "a" / "t1.nii.gz", t1, aff)
    _save(tmp_path / "src" / "a" / "t1_oblique.nii.gz", t1, oblique)
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds")))
    got = {r["image_id"]: ds.load(r) for _, r in ds.table.iterrows()}
    np.testing.assert_allclose(got["a__t1_oblique"].affine, oblique, atol=1e-5)
    np.testing.assert_allclose(got["a__t1"].affine, aff, atol=1e-6)
    assert got["a__t1"].array.shape == (1, *t1.shape[::-1])
    assert ds.manifest.outputs["orientations"] == {"RAS": 2}


def test_mixed_orientations_refused_then_reoriented(mni_t1: Path, tmp_path: Path) -> None:
    t1, aff = _mni(mni_t1)
    gm, _ = _mni(mni_t1, "gm")
    # the same grey-matter volume stored LPS: x and y axes reversed in the array and the affine
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_aff = aff @ flip
    lps_aff[:3, 3] = (aff @ [t1.shape[0] - 1, t1.shape[1] - 1, 0, 1])[:3]
    _save(tmp_path / "src" / "a" / "t1.nii.gz", t1, aff)
    _save(tmp_path / "src" / "b" / "gm_lps.nii.gz", np.ascontiguousarray(gm[::-1, ::-1]), lps_aff)
    with pytest.raises(MedsynthError, match="different orientations") as e:
        import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "x")))
    assert "1 RAS" in str(e.value) and "1 LPS" in str(e.value) and "--reorient" in str(e.value)
    assert not (tmp_path / "x").exists()  # nothing left behind
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"), reorient=True))
    assert ds.manifest.outputs["orientations"] == {"RAS": 2}
    row = ds.table[ds.table["image_id"] == "b__gm_lps"].iloc[0]
    img = ds.load(row)
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)  # back on the RAS grid, no resampling
    np.testing.assert_array_equal(img.array[0], gm.transpose(2, 1, 0))


def test_mixed_spacings_refused_then_resampled(mni_t1: Path, tmp_path: Path) -> None:
    wm2, aff2 = _mni(mni_t1, "wm", step=2)
    wm4, aff4 = _mni(mni_t1, "wm", step=4)
    _save(tmp_path / "src" / "a" / "wm2.nii.gz", wm2, aff2)
    _save(tmp_path / "src" / "b" / "wm4.nii.gz", wm4, aff4)
    with pytest.raises(MedsynthError, match="different voxel spacings") as e:
        import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "x")))
    assert "at 2x2x2 mm" in str(e.value) and "at 4x4x4 mm" in str(e.value)
    assert "--spacing" in str(e.value)
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"),
                                        spacing=[4, 4, 4], shape=[48, 56, 48]))
    imgs = {r["image_id"]: ds.load(r) for _, r in ds.table.iterrows()}
    for img in imgs.values():
        assert img.array.shape == (1, 48, 56, 48)  # (z, y, x) from --shape x,y,z
        np.testing.assert_allclose(img.spacing, (4.0, 4.0, 4.0))
        np.testing.assert_allclose(np.diag(img.affine)[:3], (4.0, 4.0, 4.0))
    # the resampled 2 mm volume matches the 4 mm one voxel for voxel, in the same place
    a, b = imgs["a__wm2"], imgs["b__wm4"]
    np.testing.assert_allclose(a.affine, b.affine, atol=2.01)  # grids within half a voxel
    inter = np.corrcoef(a.array.ravel().astype(float), b.array.ravel().astype(float))[0, 1]
    assert inter > 0.9
    assert np.linalg.norm(_centre_of_mass(ds, 0) - _centre_of_mass(ds, 1)) < 1.0


def test_crop_pad_keeps_world_positions(mni_t1: Path, tmp_path: Path) -> None:
    t1, aff = _mni(mni_t1)
    _save(tmp_path / "src" / "a" / "t1.nii.gz", t1, aff)
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"),
                                        shape=[32, 64, 40]))  # x crop, y pad, z crop
    img = ds.load(0)
    assert img.array.shape == (1, 40, 64, 32)
    orig = t1.transpose(2, 1, 0)
    # a voxel of the new grid holds the old voxel at the same world position
    inv = np.linalg.inv(aff)
    for kji in ((10, 30, 5), (20, 40, 16), (39, 63, 31)):
        k, j, i = kji
        w = img.affine @ [i, j, k, 1.0]
        oi, oj, ok = np.rint(inv @ w)[:3].astype(int)
        if 0 <= ok < orig.shape[0] and 0 <= oj < orig.shape[1] and 0 <= oi < orig.shape[2]:
            assert img.array[0, k, j, i] == orig[ok, oj, oi]


def test_normalisation_by_modality(mni_t1: Path, tmp_path: Path) -> None:
    t1, aff = _mni(mni_t1)
    _save(tmp_path / "mr" / "a" / "t1.nii.gz", (t1.astype(np.float32) * 3.7 + 11), aff)
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "mr"), str(tmp_path / "mr_ds"),
                                        modality="MR", normalize="auto"))
    v = ds.load(0).array
    assert ds.dtype == "float32" and v.min() == 0.0 and v.max() == 1.0
    assert abs(float(np.mean(v >= 1.0)) - 0.005) < 0.003  # the top 0.5 % saturate
    assert ds.manifest.outputs["normalization"]["applied"] == {"mr": 1}
    assert any("MR percentiles 0.5-99.5" in n for n in ds.manifest.outputs["notes"])
    hu = (t1.astype(np.int16) * 12 - 1024).astype(np.int16)  # a CT-like volume in HU
    _save(tmp_path / "ct" / "a" / "ct.nii.gz", hu, aff)
    ds2, _ = import_dataset(ImportConfig(str(tmp_path / "ct"), str(tmp_path / "ct_ds"),
                                         modality="CT", normalize="auto", ct_window=(-200, 300)))
    c = ds2.load(0).array
    assert ds2.dtype == "int16" and c.min() == -200 and c.max() == 300  # still HU, windowed
    np.testing.assert_array_equal(c[0], np.clip(hu, -200, 300).transpose(2, 1, 0))
    ds3, _ = import_dataset(ImportConfig(str(tmp_path / "ct"), str(tmp_path / "ot_ds"),
                                         normalize="auto"))  # OT: left as it is, said so
    np.testing.assert_array_equal(ds3.load(0).array[0], hu.transpose(2, 1, 0))
    assert any("left as they are" in n for n in ds3.manifest.outputs["notes"])


def test_dicom_series_folders_import_as_volumes(tmp_path: Path) -> None:
    from medsynth.data.demo import prostate
    from medsynth.generate.writers.dicom import DicomRunInfo
    from medsynth.generate.writers.dicom_volume import write_dicom_series

    run = DicomRunInfo.new(["a"], "MR", "test")
    vols = {}
    for i in range(2):
        vol, _ = prostate.render("pirads_4_5", i, 24, 0)
        vols[i] = vol
        write_dicom_series(vol, tmp_path / "src" / "lesion" / f"series{i}", run=run, cls="a",
                           sample_id=f"s{i}", index=i, description="", affine=prostate.affine(24))
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"),
                                        dicom_series=True))
    assert len(ds.table) == 2 and ds.manifest.outputs["spatial_dims"] == 3 and ds.modality == "MR"
    for i in range(2):
        img = ds.load(ds.table[ds.table["image_id"] == f"lesion__series{i}"].iloc[0])
        np.testing.assert_array_equal(img.array, vols[i])
        np.testing.assert_allclose(img.affine, prostate.affine(24), atol=1e-5)


def test_bad_geometry_options() -> None:
    with pytest.raises(BadUsageError, match="choose one"):
        ImportConfig("s", "o", size=32, spacing=[1, 1, 1])
    with pytest.raises(BadUsageError, match="--spacing"):
        ImportConfig("s", "o", spacing=[1, 0, 1])
    with pytest.raises(BadUsageError, match="--normalize"):
        ImportConfig("s", "o", normalize="zscore")
