"""Lossless writers for channel-first arrays: PNG (8/16-bit gray, 8-bit RGB) and NIfTI.

Shared by ``data import``, the demo generators and the ``generate`` stage's PNG/NIfTI writers.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medsynth.artifacts import atomic_write_bytes
from medsynth.imaging.storage import PNG_TEXT_KEY, Rescale


def png_bytes(array: np.ndarray, rescale: Rescale | None = None) -> bytes:
    """Encode (1,H,W) uint8/uint16 or (3,H,W) uint8 as PNG.

    With ``rescale``, ``array`` holds values (int16 HU, float32) that are stored as 16-bit
    ``rescale.to_stored(array)``; the map goes into the file as a ``medsynth-rescale`` text
    chunk, which :func:`medsynth.imaging.readers.read_image` applies when reading it back.
    """
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    info = None
    if rescale is not None:
        if array.ndim != 3 or array.shape[0] != 1:
            raise ValueError(f"rescaled PNG needs (1, H, W), got {array.shape}")
        array = rescale.to_stored(array)
        info = PngInfo()
        info.add_text(PNG_TEXT_KEY, rescale.to_text())

    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"PNG needs (1|3, H, W), got {array.shape}")
    if array.shape[0] == 1:
        a = array[0]
        if a.dtype == np.uint8:
            im = PILImage.fromarray(a)
        elif a.dtype == np.uint16:
            im = PILImage.fromarray(a.astype(np.uint16))
            if im.mode != "I;16":
                im = PILImage.frombuffer("I;16", (a.shape[1], a.shape[0]), a.astype("<u2").tobytes())
        else:
            raise ValueError(f"PNG grayscale needs uint8 or uint16, got {a.dtype}")
    else:
        if array.dtype != np.uint8:
            raise ValueError(f"PNG RGB needs uint8, got {array.dtype}")
        im = PILImage.fromarray(np.ascontiguousarray(np.moveaxis(array, 0, -1)))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1, pnginfo=info)
    return buf.getvalue()


def can_png(array: np.ndarray) -> bool:
    return array.ndim == 3 and (
        (array.shape[0] == 1 and array.dtype in (np.uint8, np.uint16))
        or (array.shape[0] == 3 and array.dtype == np.uint8)
    )


def save_png(array: np.ndarray, path: str | Path, rescale: Rescale | None = None) -> Path:
    return atomic_write_bytes(path, png_bytes(array, rescale))


def nifti_bytes(
    array: np.ndarray,
    *,
    affine: np.ndarray | None = None,
    spacing: tuple[float, ...] | None = None,
    description: str = "",
) -> bytes:
    """Encode (C,H,W) or (C,D,H,W) as gzipped NIfTI-1 in nibabel's (x, y, z[, c]) order.

    The dtype is kept (int16 HU stay int16, float32 stays float32; scl_slope 1, scl_inter 0).
    With an affine, the voxel sizes are its column lengths (it carries the spacing); without
    one, the spacing goes on the diagonal (1 mm where unknown).
    """
    import gzip

    import nibabel as nib

    if array.ndim == 3:
        data = np.ascontiguousarray(array.transpose(2, 1, 0))[:, :, None, :]  # (x, y, 1, c)
        sp = tuple(spacing) if spacing else (1.0, 1.0)
        zooms = (sp[1], sp[0], 1.0)
    elif array.ndim == 4:
        data = np.ascontiguousarray(array.transpose(3, 2, 1, 0))  # (x, y, z, c)
        sp = tuple(spacing) if spacing else (1.0, 1.0, 1.0)
        zooms = (sp[2], sp[1], sp[0])
    else:
        raise ValueError(f"NIfTI needs (C,H,W) or (C,D,H,W), got {array.shape}")
    if data.shape[-1] == 1:
        data = data[..., 0]
    if affine is None:
        affine = np.diag([*zooms, 1.0])
    else:
        affine = np.asarray(affine, dtype=np.float64)
        zooms = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(tuple(zooms) + tuple(1.0 for _ in range(data.ndim - 3)))
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if description:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=4, mtime=0)


def save_nifti(array: np.ndarray, path: str | Path, **kwargs: object) -> Path:
    return atomic_write_bytes(path, nifti_bytes(array, **kwargs))  # type: ignore[arg-type]


def save_lossless(array: np.ndarray, stem: str | Path, **nifti_kwargs: object) -> Path:
    """PNG where PNG holds the data exactly, else NIfTI; returns the path written."""
    stem = Path(stem)
    if can_png(array):
        return save_png(array, stem.with_name(stem.name + ".png"))
    return save_nifti(array, stem.with_name(stem.name + ".nii.gz"), **nifti_kwargs)
