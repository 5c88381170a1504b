"""DICOM reader: modality LUT (RescaleSlope/Intercept), VOI LUT / window, MONOCHROME1, multi-frame.

Decoding of compressed transfer syntaxes is pydicom's, through the pylibjpeg plugins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.data.image import Image, narrowest_integer
from medsynth.errors import MedsynthError

# Projection radiography is stored for display through its VOI LUT; CT/MR/PET values are
# quantitative (HU, ...) and are kept as they are unless the user asks for the window.
VOI_BY_DEFAULT = {"CR", "DX", "MG", "RF", "XA", "IO", "PX", "RG"}


def read_dicom(path: str | Path, *, voi: str = "auto") -> Image:
    """Read one DICOM file.

    Args:
        path: the file.
        voi: ``"auto"`` applies the VOI LUT or window for projection radiography only,
            ``"yes"`` always when present, ``"no"`` never.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise MedsynthError(f"{path}: not a readable DICOM file ({e})") from e
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise MedsynthError(f"{path}: DICOM file has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as e:  # decoders raise many types
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise MedsynthError(
            f"{path}: cannot decode pixel data (transfer syntax {ts}: {e})",
            hint="install the pylibjpeg decoders: pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg pylibjpeg-rle",
        ) from e

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    modality = str(ds.get("Modality", "OT") or "OT")
    applied: list[str] = []

    if spp == 1:
        stored_dtype = arr.dtype
        out = apply_modality_lut(arr, ds)
        if out is not arr and not np.array_equal(out, arr):
            applied.append("modality_lut")
        want_voi = voi == "yes" or (voi == "auto" and modality in VOI_BY_DEFAULT)
        has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
        if want_voi and has_voi:
            out = apply_voi_lut(out, ds)
            applied.append("voi_lut")
            if "VOILUTSequence" not in ds:
                # Window output is in [min, max] of the window: rescale into the stored range.
                bits = int(ds.get("BitsStored", 16))
                top = float(2**bits - 1)
                lo, hi = float(np.min(out)), float(np.max(out))
                out = (out - lo) / max(hi - lo, 1e-9) * top
                out = np.round(out)
        if photometric == "MONOCHROME1":
            out = float(np.max(out)) + float(np.min(out)) - out.astype(np.float64)
            applied.append("monochrome1_inverted")
        if out.dtype.kind == "f" and np.array_equal(out, np.round(out)):
            out = narrowest_integer(out)
        elif out.dtype.kind != "f":
            out = narrowest_integer(out) if out.dtype != stored_dtype else out
        else:
            out = out.astype(np.float32)
        arr = out[None]  # (1,H,W) or (1,F,H,W)
    else:
        # pydicom already converts YCbCr pixel data to RGB when decoding.
        arr = np.moveaxis(arr, -1, 0)  # (3,H,W) or (3,F,H,W)
        arr = np.ascontiguousarray(arr)

    spacing = None
    ps = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if ps is not None:
        spacing = (float(ps[0]), float(ps[1]))
        if frames > 1:
            st = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
            spacing = (float(st) if st else 1.0, *spacing)
    return Image(
        array=arr,
        modality=modality,
        spacing=spacing,
        meta={
            "format": "dicom",
            "photometric": photometric,
            "frames": frames,
            "bits_stored": int(ds.get("BitsStored", 8 * arr.dtype.itemsize)),
            "transfer_syntax": str(getattr(ds.file_meta, "TransferSyntaxUID", "")),
            "applied": applied,
        },
    )
