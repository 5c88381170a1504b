"""Volume geometry at import: closest-RAS reorientation, resampling to a spacing, crop/pad to a
shape, and the check that a set's volumes share one orientation and spacing.

Every step returns the new array with its spacing and affine (NIfTI RAS convention; an oblique
affine keeps its directions): :class:`medsynth.imaging.transforms.Resampling` carries the index
map, as for ``--size``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.imaging.transforms import Resampling, _border_fill, resample_affine, resample_spacing

SPACING_TOLERANCE = 0.01
"""Spacings within 1 % of each other are the same."""


def axcodes(affine: np.ndarray | None) -> str:
    """The orientation of the voxel axes (i, j, k) as letters, e.g. ``RAS`` or ``LPS``."""
    import nibabel as nib

    if affine is None:
        return "?"
    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def reorient_ras(array: np.ndarray, affine: np.ndarray,
                 spacing: Sequence[float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]:
    """(C, D, H, W) turned to the closest RAS voxel order (axes permuted and flipped, no
    interpolation; an oblique volume keeps its tilt); returns the array, its affine and its
    spacing (array order)."""
    import nibabel as nib

    a = np.asarray(affine, dtype=np.float64)
    ornt = nib.orientations.io_orientation(a)
    xyz = np.moveaxis(array, 0, -1).transpose(2, 1, 0, 3)  # (x, y, z, C)
    ras = nib.orientations.apply_orientation(xyz, ornt)
    new_affine = a @ nib.orientations.inv_ornt_aff(ornt, xyz.shape[:3])
    out = np.ascontiguousarray(np.moveaxis(ras.transpose(2, 1, 0, 3), -1, 0))
    sp = None
    if spacing is not None:
        zooms = np.linalg.norm(new_affine[:3, :3], axis=0)
        sp = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    return out, new_affine, sp


def resample_to_spacing(array: np.ndarray, spacing: Sequence[float], target: Sequence[float],
                        order: int = 1) -> tuple[np.ndarray, Resampling]:
    """Resample (C, *spatial) from ``spacing`` to ``target`` mm (both in array axis order).

    The new grid has exactly the target spacing and ``round(n * spacing / target)`` voxels per
    axis, centred on the old grid's centre (so it covers the old extent); downsampled axes are
    low-pass filtered first (no aliasing). Values stay in the source's range and dtype
    (integers rounded).
    """
    from scipy import ndimage as ndi

    sp = np.asarray(spacing, dtype=np.float64)
    tg = np.asarray(target, dtype=np.float64)
    if sp.shape != tg.shape or sp.size != array.ndim - 1:
        raise ValueError(f"spacing {tuple(spacing)} / target {tuple(target)} do not match "
                         f"{array.ndim - 1} spatial axes")
    shape = np.asarray(array.shape[1:])
    new = np.maximum(1, np.round(shape * sp / tg)).astype(int)
    step = tg / sp  # old voxels per new voxel, per axis
    offset = (shape - 1) / 2 - (new - 1) / 2 * step  # the two grids share their centre
    lo, hi = float(np.min(array)), float(np.max(array))
    out = np.empty((array.shape[0], *new), dtype=np.float32)
    sigma = np.where(step > 1, 0.5 * np.sqrt(np.maximum(step ** 2 - 1, 0)), 0.0)
    for c in range(array.shape[0]):
        src = array[c].astype(np.float32)
        if np.any(sigma > 0):
            src = ndi.gaussian_filter(src, sigma)
        out[c] = ndi.affine_transform(src, step, offset=offset, output_shape=tuple(new),
                                      order=order, mode="nearest")
    out = np.clip(out, lo, hi)
    if np.issubdtype(array.dtype, np.integer):
        out = np.round(out)
    return out.astype(array.dtype), Resampling(tuple(float(s) for s in step),
                                               tuple(float(o) for o in offset))


def crop_or_pad(array: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, Resampling]:
    """Centre-crop or pad (with the border median) (C, *spatial) to ``shape`` (array order)."""
    want = tuple(int(s) for s in shape)
    have = array.shape[1:]
    if len(want) != len(have):
        raise ValueError(f"shape {want} does not match {len(have)} spatial axes")
    out = np.empty((array.shape[0], *want), dtype=array.dtype)
    out[:] = _border_fill(array).astype(array.dtype).reshape(-1, *(1,) * len(want))
    src, dst, offset = [], [], []
    for h, w in zip(have, want, strict=True):
        start = (h - w) // 2  # > 0: crop from start; < 0: pad -start before
        if start >= 0:
            src.append(slice(start, start + w))
            dst.append(slice(0, w))
        else:
            src.append(slice(0, h))
            dst.append(slice(-start, -start + h))
        offset.append(float(start))
    out[(slice(None), *dst)] = array[(slice(None), *src)]
    return out, Resampling((1.0,) * len(want), tuple(offset))


def resample_geometry(array: np.ndarray, spacing: Sequence[float] | None,
                      affine: np.ndarray | None, *, target: Sequence[float] | None = None,
                      shape: Sequence[int] | None = None, where: str = ""
                      ) -> tuple[np.ndarray, tuple[float, ...] | None, np.ndarray | None]:
    """Resample to ``target`` spacing, then crop/pad to ``shape`` (both array order, optional);
    spacing and affine follow."""
    r = Resampling.identity(array.ndim - 1)
    if target is not None:
        if spacing is None:
            raise MedsynthError(f"{where}: its voxel spacing is unknown, so it cannot be "
                                "resampled to --spacing",
                                hint="import it without --spacing, or give it a header with "
                                "voxel sizes")
        array, r = resample_to_spacing(array, spacing, target)
    if shape is not None:
        array, r2 = crop_or_pad(array, shape)
        r = r.then(r2)
    return array, resample_spacing(spacing, r), resample_affine(affine, r)


def check_one_geometry(items: list[tuple[str, tuple[float, ...] | None, np.ndarray | None]],
                       source: str) -> None:
    """Volumes of one set must share one orientation and one spacing (training assumes it).

    ``items`` are (where, spacing, affine) per volume. Raises a MedsynthError naming the groups
    and the options that resample them.
    """
    orient = Counter(axcodes(a) for _, _, a in items if a is not None)
    if len(orient) > 1:
        groups = ", ".join(f"{n} {o}" for o, n in orient.most_common())
        odd = next(w for w, _, a in items if a is not None and axcodes(a) != orient.most_common(1)[0][0])
        raise MedsynthError(
            f"{source}: volumes of different orientations ({groups}; e.g. {odd})",
            hint="--reorient turns every volume to the closest RAS orientation (no "
            "interpolation); or import each orientation separately")
    spacings = [(w, np.asarray(s, dtype=np.float64)) for w, s, _ in items if s is not None]
    if spacings:
        ref = spacings[0][1]
        odd_s = [(w, s) for w, s in spacings
                 if s.shape != ref.shape or np.any(np.abs(s - ref) > SPACING_TOLERANCE * ref)]
        if odd_s:
            fmt = lambda s: "x".join(f"{v:g}" for v in s[::-1])  # noqa: E731 (x, y, z order)
            groups = Counter(fmt(s) for _, s in spacings)
            listing = ", ".join(f"{n} at {k} mm" for k, n in groups.most_common(5))
            raise MedsynthError(
                f"{source}: volumes of different voxel spacings ({listing}; e.g. {odd_s[0][0]})",
                hint="--spacing X,Y,Z resamples every volume to one spacing (and --shape X,Y,Z "
                "to one size); or import each spacing separately")
