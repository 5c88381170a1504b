"""A DICOM series of single-frame slices (one folder, one Series Instance UID) as one volume.

The slices are read like single files (:func:`medsynth.imaging.dicom.read_dicom`: Modality LUT
applied, so CT is in HU) and stacked in voxel order ``k``:

- by Instance Number when the numbers are distinct and their positions advance evenly along
  the slice normal (either way): the order the series was written in, so a volume written by
  medsynth comes back with its own affine;
- else by the position along the slice normal (``IOP row x column``), ascending.

The RAS affine: columns ``i`` (along a row), ``j`` (down a column) from Image Orientation and
Pixel Spacing, ``k`` from one slice's position to the next, origin at the first slice's Image
Position; LPS converted to RAS. Slices of another orientation, size or spacing, or unevenly
spaced, are refused with the file named.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.imaging.dicom import dicom_ids
from medsynth.imaging.image import Image, narrowest_integer

POSITION_TOLERANCE_MM = 0.01
"""How far slice positions may stray from an even grid (relative to the spacing: x step)."""


def dicom_files(folder: str | Path) -> list[Path]:
    """The DICOM files of a folder (not recursive), by name."""
    from medsynth.imaging.readers import image_kind

    root = Path(folder)
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
                   and image_kind(p) == "dicom")
    if not files:
        raise MedsynthError(f"{root}: no DICOM files in this folder")
    return files


def _floats(v: object, n: int, where: Path, name: str) -> np.ndarray:
    try:
        out = np.array([float(x) for x in v], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,):
        raise MedsynthError(f"{where}: {name} is missing or malformed (a slice of a volume needs it)")
    return out


def read_dicom_series(source: str | Path | Iterable[str | Path], *, voi: str = "no") -> Image:
    """Read a folder (or a list) of single-frame DICOM slices of one series as (C, D, H, W).

    Args:
        source: the series' folder, or its files.
        voi: as :func:`medsynth.imaging.dicom.read_dicom` (``no``: the values, e.g. HU).
    """
    import warnings

    import pydicom

    from medsynth.imaging.dicom import read_dicom

    files = dicom_files(source) if isinstance(source, (str, Path)) else [Path(p) for p in source]
    where = Path(source) if isinstance(source, (str, Path)) else Path(files[0]).parent
    heads = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            try:
                heads.append(pydicom.dcmread(f, stop_before_pixels=True))
            except Exception as e:
                raise MedsynthError(f"{f}: not a readable DICOM file ({e})") from e
    series = {str(h.get("SeriesInstanceUID", "")) for h in heads}
    if len(series) > 1:
        raise MedsynthError(f"{where}: holds {len(series)} series; a volume is one series",
                            hint="put each series in its own folder")
    for f, h in zip(files, heads, strict=True):
        if int(h.get("NumberOfFrames", 1) or 1) > 1:
            raise MedsynthError(f"{f}: a multi-frame object inside a series of slices",
                                hint="read multi-frame files on their own")
    first = heads[0]
    iop = _floats(first.get("ImageOrientationPatient"), 6, files[0], "Image Orientation (Patient)")
    spacing = _floats(first.get("PixelSpacing"), 2, files[0], "Pixel Spacing")
    shape = (int(first.Rows), int(first.Columns))
    positions = []
    for f, h in zip(files, heads, strict=True):
        if not np.allclose(_floats(h.get("ImageOrientationPatient"), 6, f, "Image Orientation"),
                           iop, atol=1e-4):
            raise MedsynthError(f"{f}: its orientation differs from {files[0].name}'s "
                                "(a volume needs parallel slices)")
        if (int(h.Rows), int(h.Columns)) != shape or not np.allclose(
                _floats(h.get("PixelSpacing"), 2, f, "Pixel Spacing"), spacing, rtol=1e-4):
            raise MedsynthError(f"{f}: its size or pixel spacing differs from {files[0].name}'s")
        positions.append(_floats(h.get("ImagePositionPatient"), 3, f, "Image Position (Patient)"))
    pos = np.array(positions)
    normal = np.cross(iop[:3], iop[3:])
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    numbers = [h.get("InstanceNumber") for h in heads]
    if all(n is not None for n in numbers) and len({int(n) for n in numbers}) == len(numbers):
        by_number = np.argsort([int(n) for n in numbers], kind="stable")
        steps = np.diff(along[by_number])
        if len(steps) == 0 or (np.all(np.abs(steps) > 1e-6) and np.all(np.sign(steps) == np.sign(steps[0]))):
            order = by_number
    pos, along = pos[order], along[order]
    files = [files[i] for i in order]
    if len(files) > 1:
        gaps = np.diff(along)
        if np.any(np.abs(gaps) < 1e-6):
            k = int(np.argmin(np.abs(gaps)))
            raise MedsynthError(f"{files[k + 1]}: at the same position as {files[k].name} "
                                "(two slices in one place)")
        step = (pos[-1] - pos[0]) / (len(files) - 1)
        expected = pos[0] + np.outer(np.arange(len(files)), step)
        off = np.abs(pos - expected).max()
        if off > POSITION_TOLERANCE_MM * max(float(np.linalg.norm(step)), 1.0) + 1e-3:
            raise MedsynthError(f"{where}: slices are unevenly spaced (up to {off:.2f} mm off an "
                                "even grid); medsynth volumes need evenly spaced slices")
    else:
        thick = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        step = normal * float(thick)
    planes = []
    modality = None
    for f in files:
        img = read_dicom(f, voi=voi)
        if img.array.ndim != 3:
            raise MedsynthError(f"{f}: not a single-frame image ({img.array.shape})")
        planes.append(img.array)
        modality = modality or img.modality
    kinds = {p.dtype for p in planes}
    stack = np.stack([p.astype(np.float32) if len(kinds) > 1 else p for p in planes], axis=1)
    if len(kinds) > 1:
        stack = narrowest_integer(stack)
    row_sp, col_sp = (float(v) for v in spacing)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_sp
    lps[:3, 1] = iop[3:] * row_sp
    lps[:3, 2] = step
    lps[:3, 3] = pos[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return Image(array=np.ascontiguousarray(stack), modality=modality or "OT",
                 spacing=(float(np.linalg.norm(step)), row_sp, col_sp), affine=affine,
                 meta={"format": "dicom-series", "source": str(where), "files": len(files),
                       **dicom_ids(first)})
