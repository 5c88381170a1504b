"""Read one image file of any supported format into an :class:`~medsynth.imaging.image.Image`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.imaging.image import Image, narrowest_integer, to_channel_first
from medsynth.imaging.storage import PNG_TEXT_KEY, Rescale

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = RASTER_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES


def image_kind(path: str | Path) -> str | None:
    """'raster', 'dicom', 'nifti' or None, from the name (and the DICM preamble for no suffix)."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(RASTER_SUFFIXES):
        return "raster"
    p = Path(path)
    if p.is_file() and "." not in p.name:
        try:
            with open(p, "rb") as f:
                head = f.read(132)
            if head[128:132] == b"DICM":
                return "dicom"
        except OSError:
            return None
    return None


def read_raster(path: str | Path) -> Image:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            im.load()
            mode = im.mode
            alpha = _alpha(im)
            rescale = im.text.get(PNG_TEXT_KEY) if hasattr(im, "text") else None
            if mode in ("I;16", "I;16B", "I;16L"):
                arr = np.array(im, dtype=np.uint16)
            elif mode == "I":
                arr = narrowest_integer(np.array(im))
            elif mode == "F":
                arr = np.array(im, dtype=np.float32)
            elif mode in ("L", "1", "LA"):
                arr = np.array(im.convert("L"), dtype=np.uint8)
            elif mode == "P":
                im2 = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
                arr = np.array(im2)
                # A palette image whose colours are all grey is grayscale data.
                if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
                    arr = arr[..., 0]
            else:
                arr = np.array(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise MedsynthError(f"{path}: cannot read image ({e})") from e
    meta: dict[str, object] = {"format": "raster", "mode": mode}
    if alpha is not None:
        meta["alpha"] = alpha  # dropped: medsynth images are grayscale or RGB (import notes it)
    if rescale:
        # A medsynth PNG of signed or real values: apply its stored-value map (storage.py).
        try:
            r = Rescale.from_text(rescale)
        except (ValueError, KeyError, TypeError) as e:
            raise MedsynthError(f"{path}: unreadable {PNG_TEXT_KEY} text chunk ({e})") from e
        if arr.ndim != 2:
            raise MedsynthError(f"{path}: {PNG_TEXT_KEY} on a colour PNG (grayscale only)")
        arr = r.to_values(arr)
        meta["rescale"] = r.to_dict()
        meta["bits_stored"] = 16
    return Image(array=to_channel_first(arr), modality="OT", meta=meta)


def _alpha(im: object) -> str | None:
    """'opaque' or 'transparent' for an image with an alpha channel (RGBA, LA, PA or a
    palette/grayscale image with a transparency key); None without one."""
    mode = getattr(im, "mode", "")
    if mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in im.info:  # type: ignore[attr-defined]
        return None
    band = np.asarray(im.convert("RGBA").getchannel("A"))  # type: ignore[attr-defined]
    return "opaque" if band.min() == 255 else "transparent"


def read_image(path: str | Path, *, voi: str = "auto") -> Image:
    """Read PNG/JPEG/BMP/TIFF, DICOM or NIfTI; errors name the file and the problem.

    A folder of single-frame DICOM slices of one series is read as one volume
    (:func:`medsynth.imaging.dicom_series.read_dicom_series`).
    """
    path = Path(path)
    if path.is_dir():
        from medsynth.imaging.dicom_series import read_dicom_series

        return read_dicom_series(path, voi="no" if voi == "auto" else voi)
    if not path.is_file():
        raise MedsynthError(f"{path}: no such file")
    kind = image_kind(path)
    if kind == "raster":
        img = read_raster(path)
    elif kind == "dicom":
        from medsynth.imaging.dicom import read_dicom

        img = read_dicom(path, voi=voi)
    elif kind == "nifti":
        from medsynth.imaging.nifti import read_nifti

        img = read_nifti(path)
    else:
        raise MedsynthError(
            f"{path}: unsupported file type", hint="use PNG, JPEG, BMP, TIFF, DICOM or NIfTI"
        )
    img.meta.setdefault("source", str(path))
    return img
