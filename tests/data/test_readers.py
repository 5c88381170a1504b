from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.errors import MedsynthError
from medsynth.imaging.readers import read_image
from medsynth.imaging.save import nifti_bytes, png_bytes
from tests.conftest import write_png


def test_png_8bit_gray_rgb_and_16bit_keep_their_nature(tmp_path: Path) -> None:
    gray = np.arange(0, 200, dtype=np.uint8).reshape(10, 20)
    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    deep = (np.arange(200, dtype=np.uint16) * 300).reshape(10, 20)
    write_png(tmp_path / "g.png", gray)
    write_png(tmp_path / "c.png", rgb)
    (tmp_path / "d.png").write_bytes(png_bytes(deep[None]))
    g, c, d = (read_image(tmp_path / n) for n in ("g.png", "c.png", "d.png"))
    assert g.array.shape == (1, 10, 20) and g.array.dtype == np.uint8
    assert np.array_equal(g.array[0], gray)
    assert c.array.shape == (3, 8, 9) and np.array_equal(np.moveaxis(c.array, 0, -1), rgb)
    assert d.array.dtype == np.uint16 and np.array_equal(d.array[0], deep)
    assert d.array.max() > 255  # not squashed to 8 bits


def test_corrupt_and_unsupported_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(MedsynthError, match="broken.png: cannot read image"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "x.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(MedsynthError, match="x.dcm"):
        read_image(tmp_path / "x.dcm")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(MedsynthError, match="unsupported file type"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(MedsynthError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_real_cr_chest_radiograph_monochrome1_voi(pydicom_data_dir: Path) -> None:
    img = read_image(pydicom_data_dir / "RG1_UNCR.dcm")
    assert img.modality == "CR" and img.array.shape[0] == 1 and img.array.ndim == 3
    assert img.array.dtype == np.uint16 and img.array.max() > 255
    assert "monochrome1_inverted" in img.meta["applied"] and "voi_lut" in img.meta["applied"]
    raw = read_image(pydicom_data_dir / "RG1_UNCR.dcm", voi="no")
    # MONOCHROME1: high stored values are dark, so the inverted image anti-correlates with storage.
    import pydicom

    stored = pydicom.dcmread(pydicom_data_dir / "RG1_UNCR.dcm").pixel_array.astype(float)
    assert np.corrcoef(raw.array[0].ravel().astype(float), stored.ravel())[0, 1] < -0.99


@pytest.mark.parametrize("stem", ["RG1", "RG3", "MR2"])
def test_lossless_compressed_equals_uncompressed(pydicom_data_dir: Path, stem: str) -> None:
    a = read_image(pydicom_data_dir / f"{stem}_UNCR.dcm").array
    b = read_image(pydicom_data_dir / f"{stem}_J2KR.dcm").array
    assert a.dtype == b.dtype and np.array_equal(a, b)


def test_mr_rescale_slope_kept_as_float(pydicom_data_dir: Path) -> None:
    img = read_image(pydicom_data_dir / "MR2_UNCR.dcm")
    assert img.modality == "MR" and "modality_lut" in img.meta["applied"]
    assert img.array.dtype == np.float32 and "voi_lut" not in img.meta["applied"]


def test_ct_is_signed_hounsfield(pydicom_data_dir: Path) -> None:
    img = read_image(pydicom_data_dir / "693_UNCR.dcm")
    assert img.modality == "CT" and img.array.min() < 0
    assert img.array.dtype in (np.int16, np.float32)


def test_multiframe_rle_bigendian_jpegls_agree(pydicom_data_dir: Path) -> None:
    ref = read_image(pydicom_data_dir / "emri_small.dcm").array
    assert ref.shape == (1, 10, 64, 64)
    for name in ("emri_small_RLE.dcm", "emri_small_big_endian.dcm", "emri_small_jpeg_ls_lossless.dcm"):
        other = read_image(pydicom_data_dir / name).array
        assert other.dtype.isnative and np.array_equal(other, ref), name


def test_rgb_and_palette_become_three_channels(pydicom_data_dir: Path) -> None:
    rgb = read_image(pydicom_data_dir / "SC_rgb.dcm")
    pal = read_image(pydicom_data_dir / "OBXXXX1A.dcm")
    assert rgb.array.shape[0] == 3 and rgb.array.dtype == np.uint8
    assert pal.array.shape[0] == 3 and "palette->RGB" in pal.meta["applied"]


def test_real_mni_volume_kept_3d(mni_t1: Path) -> None:
    import nibabel as nib

    img = read_image(mni_t1)
    ref = nib.load(str(mni_t1))
    x, y, z = ref.shape[:3]
    assert img.array.shape == (1, z, y, x) and img.spatial_dims == 3
    assert np.allclose(img.affine, ref.affine)
    assert img.spacing == tuple(float(s) for s in ref.header.get_zooms()[:3][::-1])


def test_nifti_2d_roundtrip(tmp_path: Path) -> None:
    arr = (np.arange(12 * 7, dtype=np.uint16) * 500).reshape(1, 12, 7)
    (tmp_path / "a.nii.gz").write_bytes(nifti_bytes(arr, spacing=(0.5, 0.25)))
    img = read_image(tmp_path / "a.nii.gz")
    assert img.array.shape == (1, 12, 7) and img.array.dtype == np.uint16
    assert np.array_equal(img.array, arr) and img.spacing == (0.5, 0.25)
