"""DICOM reader: modality LUT (RescaleSlope/Intercept), VOI LUT / window, MONOCHROME1, multi-frame.

Decoding of compressed transfer syntaxes is pydicom's, through the pylibjpeg plugins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.imaging.image import Image, narrowest_integer

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
        elif arr.dtype == np.uint16:
            # 16-bit palettes of 8-bit colours hold v * 256 or v * 257: exactly 8-bit RGB.
            for div in (256, 257):
                if not np.any(arr % div):
                    arr = (arr // div).astype(np.uint8)
                    break
        arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))
        applied.append("palette->RGB")
    elif spp == 1:
        stored_dtype = arr.dtype
        out = apply_modality_lut(arr, _with_frame_rescale(ds))
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

    spacing, affine = _geometry(ds, frames)
    return Image(
        array=arr,
        modality=modality,
        spacing=spacing,
        affine=affine,
        meta={
            "format": "dicom",
            "photometric": photometric,
            "frames": frames,
            "bits_stored": int(ds.get("BitsStored", 8 * arr.dtype.itemsize)),
            "transfer_syntax": str(getattr(ds.file_meta, "TransferSyntaxUID", "")),
            "applied": applied,
            **dicom_ids(ds),
        },
    )


def dicom_ids(ds) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """PatientID, StudyInstanceUID and SeriesInstanceUID where the file has them (the split
    groups of ``data import``)."""
    out = {}
    for key, tag in (("patient_id", "PatientID"), ("study_uid", "StudyInstanceUID"),
                     ("series_uid", "SeriesInstanceUID")):
        v = str(ds.get(tag, "") or "").strip()
        if v:
            out[key] = v
    return out


def _functional(ds, keyword: str, frame: int = 0):  # type: ignore[no-untyped-def]
    """Item of an enhanced (multi-frame) functional group macro: per-frame first, then shared."""
    for seq_name, index in (("PerFrameFunctionalGroupsSequence", frame),
                            ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(seq_name)
        if groups and len(groups) > index and keyword in groups[index] and groups[index][keyword].value:
            return groups[index][keyword][0]
    return None


def _with_frame_rescale(ds):  # type: ignore[no-untyped-def]
    """Enhanced images keep Rescale Slope/Intercept in a functional group: lift it to the top
    level, where pydicom's modality LUT looks (only when the top level has none)."""
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        return ds
    item = _functional(ds, "PixelValueTransformationSequence")
    if item is None or "RescaleSlope" not in item:
        return ds
    ds = ds.copy()
    ds.RescaleSlope = item.RescaleSlope
    ds.RescaleIntercept = item.get("RescaleIntercept", 0)
    return ds


def _positive(values) -> tuple[float, ...] | None:  # type: ignore[no-untyped-def]
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return out if out and all(v > 0 for v in out) else None


def _geometry(ds, frames: int) -> tuple[tuple[float, ...] | None, np.ndarray | None]:  # type: ignore[no-untyped-def]
    """Spacing in array axis order and the RAS voxel-to-world affine (NIfTI convention).

    From Pixel Spacing (or Imager Pixel Spacing for projection images), Image Orientation and
    Image Position (Patient), top level or in the functional groups of enhanced multi-frame
    objects. Zero or missing spacing is unknown (None); the affine needs orientation and position.
    """
    measures = _functional(ds, "PixelMeasuresSequence")
    ps = ds.get("PixelSpacing") or (measures.get("PixelSpacing") if measures else None) \
        or ds.get("ImagerPixelSpacing")
    inplane = _positive(ps) if ps is not None else None
    if inplane is None or len(inplane) != 2:
        return None, None
    row_sp, col_sp = inplane
    between = ds.get("SpacingBetweenSlices") or (measures.get("SpacingBetweenSlices") if measures else None)
    thick = ds.get("SliceThickness") or (measures.get("SliceThickness") if measures else None)
    step = None
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        item = _functional(ds, "PlaneOrientationSequence")
        iop = item.get("ImageOrientationPatient") if item is not None else None
    positions = []
    if "ImagePositionPatient" in ds:
        positions = [ds.ImagePositionPatient]
    else:
        for f in range(min(frames, 2)):
            item = _functional(ds, "PlanePositionSequence", f)
            if item is not None and "ImagePositionPatient" in item:
                positions.append(item.ImagePositionPatient)
    # distance between frames: from consecutive positions, else the recorded spacing/thickness
    slice_sp = None
    if len(positions) > 1:
        step = np.array([float(v) for v in positions[1]]) - np.array([float(v) for v in positions[0]])
        slice_sp = float(np.linalg.norm(step)) or None
    for candidate in (between, thick):
        if slice_sp is None and candidate is not None and _positive([candidate]):
            slice_sp = float(candidate)
    affine = None
    if iop is not None and len(iop) == 6 and positions:
        r = np.array([float(v) for v in iop[:3]])  # direction of increasing column index
        c = np.array([float(v) for v in iop[3:]])  # direction of increasing row index
        lps = np.eye(4)
        lps[:3, 0] = r * col_sp
        lps[:3, 1] = c * row_sp
        lps[:3, 2] = step if len(positions) > 1 and slice_sp else np.cross(r, c) * (slice_sp or 1.0)
        lps[:3, 3] = [float(v) for v in positions[0]]
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> NIfTI RAS
    if frames > 1:
        return (slice_sp or 1.0, row_sp, col_sp), affine
    return (row_sp, col_sp), affine
