"""PNG / DICOM / NIfTI writers: lossless pixels, standard-conformant DICOM, correct NIfTI affine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medsynth.generate.writers.dicom import (
    SYNTHETIC_PATIENT_NAME,
    DicomRunInfo,
    write_dicom,
)
from medsynth.generate.writers.nifti import write_nifti
from medsynth.generate.writers.png import write_png

DCIODVFY = shutil.which("dciodvfy") or ("/usr/bin/dciodvfy" if Path("/usr/bin/dciodvfy").exists()
                                        else None)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) reported by dicom3tools' dciodvfy for one file."""
    if DCIODVFY is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed: apt-get install dicom3tools")
    r = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    lines = (r.stdout + r.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


# The one warning dciodvfy gives on our objects, reviewed (docs/generate.md): Laterality is
# present but empty because a synthetic image has no body side ("actually unknown").
ACCEPTED_WARNINGS = ("attribute <Laterality>",)


def assert_valid_dicom(path: Path) -> None:
    errors, warnings = dciodvfy(path)
    assert errors == [], f"{path}: {errors}"
    unexpected = [w for w in warnings if not any(a in w for a in ACCEPTED_WARNINGS)]
    assert unexpected == [], f"{path}: {unexpected}"


def test_png_keeps_bit_depth_and_channels(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    g16 = rng.integers(0, 65535, (1, 16, 20)).astype(np.uint16)
    g8 = rng.integers(0, 255, (1, 16, 20)).astype(np.uint8)
    rgb = rng.integers(0, 255, (3, 16, 20)).astype(np.uint8)
    for name, arr in (("g16", g16), ("g8", g8), ("rgb", rgb)):
        p = write_png(arr, tmp_path / f"{name}.png")
        im = Image.open(p)
        back = np.asarray(im)
        back = back[None] if back.ndim == 2 else np.moveaxis(back, -1, 0)
        assert back.shape == arr.shape
        np.testing.assert_array_equal(back.astype(arr.dtype), arr)
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert Image.open(tmp_path / "rgb.png").mode == "RGB"
    with pytest.raises(ValueError):
        write_png(rng.random((1, 4, 4)).astype(np.float32), tmp_path / "f.png")


@pytest.mark.parametrize("channels,dtype,modality", [(1, np.uint16, "DX"), (3, np.uint8, "XC"),
                                                      (1, np.uint8, "unknown")])
def test_dicom_is_valid_synthetic_and_lossless(tmp_path: Path, channels: int, dtype: type,
                                               modality: str) -> None:
    import pydicom

    rng = np.random.default_rng(1)
    arr = rng.integers(0, np.iinfo(dtype).max, (channels, 24, 20)).astype(dtype)
    run = DicomRunInfo.new(["pneumonia", "odd/class ü\\x"], modality=modality, model_name="m1")
    text = "Patchy opacity, right lower zone; ünïcode and a back\\slash"
    p = write_dicom(arr, tmp_path / "a.dcm", run=run, cls="odd/class ü\\x", sample_id="odd-000003",
                    instance_number=4, description=text, seed=123, spacing=(0.5, 0.6))
    assert_valid_dicom(p)
    ds = pydicom.dcmread(p)
    px = ds.pixel_array
    px = px[None] if px.ndim == 2 else np.moveaxis(px, -1, 0)
    np.testing.assert_array_equal(px, arr)
    assert px.dtype == arr.dtype and ds.BitsAllocated == 8 * arr.dtype.itemsize
    assert ds.PhotometricInterpretation == ("RGB" if channels == 3 else "MONOCHROME2")
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert ds.ConversionType == "SYN"
    assert ds.BurnedInAnnotation == "NO" and ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod
    assert str(ds.PatientName) == SYNTHETIC_PATIENT_NAME and ds.PatientID == "odd-000003"
    assert ds.StudyInstanceUID == run.study_uid
    assert ds.SeriesInstanceUID == run.series_uids["odd/class ü\\x"]
    assert ds.SeriesNumber == 2 and ds.InstanceNumber == 4
    assert ds.ImageComments == text
    assert "\\" not in ds.SeriesDescription and "odd/class ü" in ds.SeriesDescription
    assert ds.Modality == (modality if modality != "unknown" else "OT")
    assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.6]
    # Fresh UIDs: a second object of the same run shares study/series, never the instance.
    q = write_dicom(arr, tmp_path / "b.dcm", run=run, cls="pneumonia", sample_id="p-000000",
                    instance_number=1, description="x")
    ds2 = pydicom.dcmread(q)
    assert ds2.StudyInstanceUID == ds.StudyInstanceUID
    assert ds2.SeriesInstanceUID != ds.SeriesInstanceUID
    assert ds2.SOPInstanceUID != ds.SOPInstanceUID


def test_nifti_single_slice_with_spacing_affine(tmp_path: Path) -> None:
    import nibabel as nib

    arr = np.arange(3 * 4, dtype=np.uint16).reshape(1, 3, 4) * 100
    p = write_nifti(arr, tmp_path / "x.nii.gz", spacing=(0.5, 0.8), description="synthetic")
    img = nib.load(p)
    assert img.shape == (4, 3, 1)  # (x = columns, y = rows, one slice)
    np.testing.assert_allclose(img.affine, np.diag([0.8, 0.5, 1.0, 1.0]))
    np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.5, 1.0))
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data[:, :, 0].T, arr[0])
    rgb = np.random.default_rng(0).integers(0, 255, (3, 5, 6)).astype(np.uint8)
    img3 = nib.load(write_nifti(rgb, tmp_path / "c.nii.gz"))
    assert img3.shape == (6, 5, 1, 3)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(img3.dataobj)[:, :, 0, :], -1, 0),
                                  rgb.transpose(0, 2, 1))
