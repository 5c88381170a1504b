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
    import warnings

    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # Old files without the 128-byte preamble and file meta (pre-DICOM-3 style).
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception as e:
                raise MedsynthError(f"{path}: not a readable DICOM file ({e})") from e
            if "PixelData" not in ds:
                raise MedsynthError(f"{path}: not a DICOM file (no preamble, no pixel data)") from None
            if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
                from pydicom.dataset import FileMetaDataset
                from pydicom.uid import ImplicitVRLittleEndian

                ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        except (OSError, EOFError, ValueError) as e:
            raise MedsynthError(f"{path}: not a readable DICOM file ({e})") from e
        return _pixels(ds, path, voi)


def _pixels(ds, path: str | Path, voi: str) -> Image:  # type: ignore[no-untyped-def]
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

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

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)  # (..., 3) RGB at the palette's bit depth
        if arr.dtype != np.uint8 and int(np.max(arr)) <= 255:
            arr = arr.astype(np.uint8)
        arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))
        applied.append("palette->RGB")
    elif spp == 1:
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
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))

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
