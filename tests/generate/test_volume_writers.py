"""3D writers: NIfTI keeps the affine; DICOM series and enhanced objects pass dciodvfy and read
back (medsynth's reader) to the same voxels and affine. An asymmetric marker catches the usual
pitfalls: LPS vs RAS signs, (z, y, x) vs (x, y, z) axis order, slice order."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medsynth.errors import MedsynthError
from medsynth.generate.writers.dicom import SYNTHETIC_PATIENT_NAME, DicomRunInfo
from medsynth.generate.writers.dicom_volume import (
    VolumeGeometry,
    volume_affine,
    write_dicom_enhanced,
    write_dicom_series,
)
from medsynth.generate.writers.nifti import write_nifti
from medsynth.imaging.readers import read_image
from medsynth.imaging.storage import Rescale
from tests.generate.test_writers import assert_valid_dicom, dciodvfy

SHAPE = (5, 7, 9)  # (D, H, W): every axis a different length
MARK = (1, 2, 7)  # (k, j, i) array index of the bright marker voxel


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


def _affine(kind: str) -> np.ndarray:
    a = np.eye(4)
    if kind == "ras":
        a[:3, :3] = np.diag([0.8, 0.9, 2.5])
    elif kind == "lps":  # what a DICOM-derived NIfTI often holds: x and y flipped
        a[:3, :3] = np.diag([-0.8, -0.9, 2.5])
    elif kind == "flipped_z":  # a left-handed voxel grid (det < 0)
        a[:3, :3] = np.diag([0.8, 0.9, -2.5])
    elif kind == "oblique":
        a[:3, :3] = _rotation((1, 2, 3), 27) @ np.diag([0.8, 0.9, 2.5])
    elif kind == "sagittal":  # voxel axes permuted against the world's: i -> A, j -> S, k -> L
        a[:3, :3] = np.array([[0, 0, -2.5], [0.8, 0, 0], [0, 0.9, 0]])
    a[:3, 3] = [-12.5, 40.25, -7.0]
    return a


def _volume(dtype: str = "uint16") -> np.ndarray:
    v = np.zeros((1, *SHAPE), np.float64)
    v[0] = np.arange(np.prod(SHAPE)).reshape(SHAPE) % 97 + 10
    v[(0, *MARK)] = 1000
    if dtype == "int16":
        return (v - 600).astype(np.int16)
    if dtype == "float32":
        return (v * 0.37 + 0.125).astype(np.float32)
    return v.astype(dtype)


def _kwargs(modality: str = "MR", **extra: object) -> dict[str, object]:
    run = DicomRunInfo.new(["lesion", "none", "pirads_4_5"], modality, "test-model")
    return {"run": run, "cls": "lesion", "sample_id": "lesion-000003", "index": 3,
            "description": "A 12 mm lesion \u2264 grade 4.", "seed": 11, **extra}


def _world(affine: np.ndarray, kji: tuple[int, int, int]) -> np.ndarray:
    k, j, i = kji
    return (np.asarray(affine) @ [i, j, k, 1.0])[:3]


@pytest.mark.parametrize("kind", ["ras", "lps", "flipped_z", "oblique", "sagittal"])
def test_nifti_and_dicom_round_trip_keep_voxels_and_affine(tmp_path: Path, kind: str) -> None:
    import nibabel as nib
    import pydicom

    vol, aff = _volume(), _affine(kind)
    marker_world = _world(aff, MARK)
    nii = write_nifti(vol, tmp_path / "v.nii.gz", affine=aff)
    series = write_dicom_series(vol, tmp_path / "series", **_kwargs(affine=aff))
    enhanced = write_dicom_enhanced(vol, tmp_path / "v.dcm", **_kwargs(affine=aff))
    assert len(series) == SHAPE[0]

    # nibabel itself (not our reader): the marker sits at data[i, j, k] = (7, 2, 1)
    img = nib.load(str(nii))
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)
    assert img.get_fdata()[MARK[2], MARK[1], MARK[0]] == 1000
    # pydicom itself: the marker's slice and pixel, and its world position from IPP/IOP/spacing
    ds = pydicom.dcmread(series[MARK[0]])
    assert int(ds.InstanceNumber) == MARK[0] + 1
    assert ds.pixel_array[MARK[1], MARK[2]] == 1000
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    lps = ipp + MARK[2] * col_sp * iop[:3] + MARK[1] * row_sp * iop[3:]
    np.testing.assert_allclose(lps * [-1, -1, 1], marker_world, atol=1e-4)

    # medsynth's reader: every file gives the same voxels and the NIfTI's affine
    for path in (nii, tmp_path / "series", enhanced):
        back = read_image(path)
        np.testing.assert_array_equal(back.array, vol, err_msg=str(path))
        np.testing.assert_allclose(back.affine, aff, atol=1e-4, err_msg=str(path))
        np.testing.assert_allclose(back.spacing, [2.5, 0.9, 0.8], atol=1e-4)


def test_dicom_volume_objects_are_valid_and_say_synthetic(tmp_path: Path) -> None:
    import pydicom

    aff = _affine("oblique")
    kw = _kwargs(affine=aff)
    series = write_dicom_series(_volume(), tmp_path / "s", **kw)
    enhanced = write_dicom_enhanced(_volume(), tmp_path / "e.dcm", **kw)
    for p in (series[0], series[-1], enhanced):
        assert_valid_dicom(p)
    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in series]
    assert len({h.SOPInstanceUID for h in heads}) == len(heads)
    assert len({h.SeriesInstanceUID for h in heads}) == 1
    assert len({h.FrameOfReferenceUID for h in heads}) == 1
    h = heads[0]
    assert h.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    assert list(h.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert "Synthetic" in h.DerivationDescription and "seed 11" in h.DerivationDescription
    assert h.PatientName == SYNTHETIC_PATIENT_NAME and h.PatientIdentityRemoved == "YES"
    assert h.BurnedInAnnotation == "NO" and h.Manufacturer == "medsynth"
    assert h.ImageComments == "A 12 mm lesion \u2264 grade 4."
    geom = VolumeGeometry.from_affine(aff, SHAPE[0])
    assert float(h.SliceThickness) == pytest.approx(geom.slice_spacing, abs=1e-6)
    assert float(h.SpacingBetweenSlices) == pytest.approx(2.5, abs=1e-6)
    e = pydicom.dcmread(enhanced, stop_before_pixels=True)
    assert e.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.4"  # Legacy Converted Enhanced MR
    assert int(e.NumberOfFrames) == SHAPE[0]
    assert e.SeriesInstanceUID != h.SeriesInstanceUID  # a converted object: its own series
    assert e.FrameOfReferenceUID == h.FrameOfReferenceUID  # the same voxels in the same place
    assert e.StudyInstanceUID == h.StudyInstanceUID
    # series and frame UIDs depend on the run and the sample only: a resumed run rewrites them
    again = pydicom.dcmread(write_dicom_series(_volume(), tmp_path / "again", **kw)[0])
    assert again.SeriesInstanceUID == h.SeriesInstanceUID
    assert again.FrameOfReferenceUID == h.FrameOfReferenceUID
    assert again.SOPInstanceUID != h.SOPInstanceUID
    other = pydicom.dcmread(write_dicom_series(_volume(), tmp_path / "other",
                                               **{**kw, "sample_id": "lesion-000004"})[0])
    assert other.SeriesInstanceUID != h.SeriesInstanceUID


def test_signed_ct_and_rescaled_float_volumes(tmp_path: Path) -> None:
    import pydicom

    aff = _affine("lps")
    ct = _volume("int16")
    for layout, write in (("series", write_dicom_series), ("enhanced", write_dicom_enhanced)):
        target = tmp_path / layout if layout == "series" else tmp_path / f"{layout}.dcm"
        out = write(ct, target, **_kwargs("CT", affine=aff))
        first = out[0] if isinstance(out, list) else out
        assert_valid_dicom(first)
        back = read_image(target)
        np.testing.assert_array_equal(back.array, ct)  # HU exactly
        assert back.modality == "CT"
    assert pydicom.dcmread(tmp_path / "series" / "slice_0001.dcm").RescaleType == "HU"

    # Real-valued MR: 16-bit stored values with Rescale Slope/Intercept. The Enhanced MR object
    # holds them in its Pixel Value Transformation (valid); MR Image Storage slices carry them
    # as the standard extension most MR vendors use (dciodvfy warns, no error).
    mr = _volume("float32")
    rescale = Rescale.for_values("float32", float(mr.min()), float(mr.max()), "MR")
    kw = _kwargs(affine=aff, rescale=rescale)
    enhanced = write_dicom_enhanced(mr, tmp_path / "mr.dcm", **kw)
    assert_valid_dicom(enhanced)
    paths = write_dicom_series(mr, tmp_path / "mr", **kw)
    errors, warnings = dciodvfy(paths[0])
    assert errors == []
    assert all("Rescale" in w or "Standard Extended" in w or "Laterality" in w for w in warnings)
    for target in (enhanced, tmp_path / "mr"):
        back = read_image(target)
        assert np.abs(back.array.astype(np.float64) - mr).max() <= rescale.slope / 2 + 1e-6


def test_refuses_what_dicom_volumes_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(MedsynthError, match="MR or CT"):
        write_dicom_series(_volume(), tmp_path / "ot", **_kwargs("OT", affine=_affine("ras")))
    with pytest.raises(ValueError, match="grayscale"):
        write_dicom_series(np.zeros((3, 2, 4, 4), np.uint8), tmp_path / "rgb", **_kwargs())
    sheared = _affine("ras")
    sheared[:3, 1] = [0.3, 0.9, 0.0]  # rows not perpendicular to columns
    with pytest.raises(MedsynthError, match="orthogonal"):
        write_dicom_series(_volume(), tmp_path / "shear", **_kwargs(affine=sheared))


def test_volume_affine_default_is_centred_ras() -> None:
    a = volume_affine((1, 4, 6, 8), spacing=(3.0, 2.0, 1.0))
    np.testing.assert_allclose(np.diag(a), [1.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(a @ [3.5, 2.5, 1.5, 1.0], [0, 0, 0, 1])


def test_series_reader_refuses_broken_series(tmp_path: Path) -> None:
    import shutil

    paths = write_dicom_series(_volume(), tmp_path / "s", **_kwargs(affine=_affine("ras")))
    paths[2].unlink()  # a missing slice: uneven spacing
    with pytest.raises(MedsynthError, match="unevenly spaced"):
        read_image(tmp_path / "s")
    other = write_dicom_series(_volume(), tmp_path / "o", **_kwargs(affine=_affine("oblique")))
    shutil.copy(other[0], tmp_path / "s" / "zz.dcm")
    with pytest.raises(MedsynthError, match="2 series"):
        read_image(tmp_path / "s")


def test_write_volume_writes_every_format_with_one_geometry(tmp_path: Path) -> None:
    from medsynth.data.demo import prostate
    from medsynth.generate.writers.volume import relative_dicom_path, write_volume

    vol, _ = prostate.render("pirads_4_5", 0, 24, seed=0)
    aff = prostate.affine(24)
    for layout in ("series", "enhanced"):
        rel = relative_dicom_path("pirads_4_5", "pirads_4_5-000000", layout)
        paths = {"nifti": tmp_path / layout / "v.nii.gz", "dicom": tmp_path / layout / rel}
        kw = {**_kwargs(), "cls": "pirads_4_5", "sample_id": "pirads_4_5-000000"}
        written = write_volume(vol, paths, affine=aff, dicom_layout=layout, **kw)
        assert len(written["dicom"]) == (24 if layout == "series" else 1)
        for fmt in ("nifti", "dicom"):
            back = read_image(paths[fmt])
            np.testing.assert_array_equal(back.array, vol)
            np.testing.assert_allclose(back.affine, aff, atol=1e-5)


@pytest.mark.parametrize("layout", ["series", "enhanced"])
def test_volume_gets_a_structured_report_about_all_its_slices(tmp_path: Path,
                                                              layout: str) -> None:
    """Every DICOM image gets its report as an SR, volumes too (docs/generate.md)."""
    import pydicom

    from medsynth.generate.writers.sr import write_sr

    kw = _kwargs(affine=_affine("ras"))
    if layout == "series":
        target = tmp_path / "series"
        write_dicom_series(_volume(), target, **kw)
    else:
        target = write_dicom_enhanced(_volume(), tmp_path / "v.dcm", **kw)
    sections = [("FINDINGS", "A 12 mm lesion\u2028in the peripheral zone."),
                ("IMPRESSION", "PI-RADS 4.")]
    sr_path = write_sr(tmp_path / "sr.dcm", target, sections, instance_number=4, seed=11)
    assert_valid_dicom(sr_path)
    sr = pydicom.dcmread(sr_path)
    images = sorted(target.glob("*.dcm")) if target.is_dir() else [target]
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in images}
    evidence = {str(i.ReferencedSOPInstanceUID)
                for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    assert evidence == uids and len(uids) == (SHAPE[0] if layout == "series" else 1)
    first = pydicom.dcmread(images[0], stop_before_pixels=True)
    assert sr.StudyInstanceUID == first.StudyInstanceUID and sr.PatientID == first.PatientID

    def texts(items: object) -> list[str]:
        return [t for it in items for t in ([str(it.TextValue)] if "TextValue" in it else [])
                + texts(it.get("ContentSequence", []))]

    assert any("peripheral zone" in t for t in texts(sr.ContentSequence))
