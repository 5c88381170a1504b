"""Aspect-preserving resize of channel-first 2D images and 3D volumes, with the geometry kept.

Pixels keep their dtype (no 16-to-8-bit squash) and their range: the resampling filters
(Lanczos, bicubic) overshoot at edges, so results are clipped to the source's own minimum and
maximum (never a negative value out of a non-negative image, never a new extreme HU).

Every resize returns a :class:`Resampling` that says where each new voxel sits in the old voxel
grid; :func:`resample_spacing` and :func:`resample_affine` carry spacing and the NIfTI affine
through it, so a 512-px CT slice of 0.48 mm pixels resized to 32 px says 7.7 mm pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

RESIZE_MODES = ("pad", "crop")


@dataclasses.dataclass(frozen=True)
class Resampling:
    """New voxel index -> old voxel index, per spatial axis in array order: ``old = new * step + offset``.

    Indices are voxel centres (voxel ``i`` covers ``[i - 0.5, i + 0.5]``), the convention of
    NIfTI affines, DICOM Image Position and PIL/torch resizing with ``align_corners=False``.
    """

    step: tuple[float, ...]
    """Old voxels per new voxel (the spacing multiplier), e.g. 16.0 for 512 -> 32 px."""
    offset: tuple[float, ...]
    """Old index of new voxel 0 (after padding or cropping)."""

    @classmethod
    def identity(cls, ndim: int) -> Resampling:
        return cls((1.0,) * ndim, (0.0,) * ndim)

    def then(self, other: Resampling) -> Resampling:
        """This resampling followed by ``other`` (``other`` maps into this one's output grid)."""
        return Resampling(tuple(a * b for a, b in zip(self.step, other.step, strict=True)),
                          tuple(a * o2 + o1 for a, o1, o2 in
                                zip(self.step, self.offset, other.offset, strict=True)))


def resample_spacing(spacing: tuple[float, ...] | None, r: Resampling) -> tuple[float, ...] | None:
    """Spacing (array axis order) after ``r``: each axis's spacing times its step."""
    if spacing is None:
        return None
    if len(spacing) != len(r.step):
        raise ValueError(f"spacing {spacing} does not match a {len(r.step)}D resampling")
    return tuple(float(s) * st for s, st in zip(spacing, r.step, strict=True))


def resample_affine(affine: np.ndarray | None, r: Resampling) -> np.ndarray | None:
    """The NIfTI voxel-to-world affine after ``r``.

    The affine indexes voxels as (i, j, k) = (column, row, slice), the reverse of the array axis
    order; a 2D image is the single slice k = 0 (its third column, the slice normal, is kept).
    """
    if affine is None:
        return None
    a = np.asarray(affine, dtype=np.float64)
    m = np.eye(4)
    for axis, (st, off) in enumerate(zip(reversed(r.step), reversed(r.offset), strict=True)):
        m[axis, axis] = st
        m[axis, 3] = off
    return a @ m


def _resize_plane(plane: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image as PILImage

    im = PILImage.fromarray(plane.astype(np.float32), mode="F")
    up = (w * h) > plane.size
    return np.asarray(im.resize((w, h), PILImage.Resampling.BICUBIC if up else PILImage.Resampling.LANCZOS))


def _scaled(array: np.ndarray, new_shape: tuple[int, ...]) -> np.ndarray:
    """Resample (C, *spatial) float32 to (C, *new_shape), separably with PIL planes."""
    if array.ndim == 3:  # (C, H, W)
        return np.stack([_resize_plane(array[c], new_shape[1], new_shape[0])
                         for c in range(array.shape[0])])
    c, d, h, w = array.shape
    nd, nh, nw = new_shape
    inplane = np.empty((c, d, nh, nw), dtype=np.float32)
    for ci in range(c):
        for z in range(d):
            inplane[ci, z] = _resize_plane(array[ci, z], nw, nh)
    if nd == d:
        return inplane
    out = np.empty((c, nd, nh, nw), dtype=np.float32)
    for ci in range(c):
        for y in range(nh):  # resize the slice axis on (D, W) planes, W unchanged
            out[ci, :, y, :] = _resize_plane(inplane[ci, :, y, :], nw, nd)
    return out


def _border_fill(planes: np.ndarray) -> np.ndarray:
    """Per-channel median of the outer faces: padding then adds no new intensity edge."""
    if planes.ndim == 3:  # 2D: first and last rows, as before
        return np.median(np.concatenate([planes[:, 0, :], planes[:, -1, :]], axis=1), axis=1)
    faces = [planes[:, 0].reshape(planes.shape[0], -1), planes[:, -1].reshape(planes.shape[0], -1),
             planes[:, :, 0].reshape(planes.shape[0], -1), planes[:, :, -1].reshape(planes.shape[0], -1),
             planes[..., 0].reshape(planes.shape[0], -1), planes[..., -1].reshape(planes.shape[0], -1)]
    return np.median(np.concatenate(faces, axis=1), axis=1)


def fit_to_size(array: np.ndarray, size: int, mode: str = "pad") -> tuple[np.ndarray, Resampling]:
    """Resize (C,H,W) or (C,D,H,W) to ``size`` on every spatial axis, keeping the voxel aspect.

    One scale for all axes: the longest side fits ``size`` and the rest is padded with the
    border median (``pad``), or the shortest side fits and the rest is centre-cropped (``crop``).
    Returns the new array (same dtype, clipped to the source's range) and its :class:`Resampling`.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}")
    if array.ndim not in (3, 4):
        raise ValueError(f"fit_to_size needs (C,H,W) or (C,D,H,W), got {array.shape}")
    shape = array.shape[1:]
    if all(s == size for s in shape):
        return array, Resampling.identity(len(shape))
    scale = size / max(shape) if mode == "pad" else size / min(shape)
    new = tuple(max(1, round(s * scale)) for s in shape)
    lo, hi = float(np.min(array)), float(np.max(array))
    planes = np.clip(_scaled(array.astype(np.float32), new), lo, hi)
    if np.issubdtype(array.dtype, np.integer):
        planes = np.round(planes)
    planes = planes.astype(array.dtype)
    step = tuple(s / n for s, n in zip(shape, new, strict=True))
    # the resize itself: new voxel centre i sits at old (i + 0.5) * step - 0.5
    resized = Resampling(step, tuple(0.5 * st - 0.5 for st in step))
    if mode == "crop":
        starts = tuple((n - size) // 2 for n in new)
        index = (slice(None), *(slice(s, s + size) for s in starts))
        cut = Resampling((1.0,) * len(new), tuple(float(s) for s in starts))
        return np.ascontiguousarray(planes[index]), resized.then(cut)
    starts = tuple((size - n) // 2 for n in new)
    out = np.empty((array.shape[0], *(size,) * len(new)), dtype=array.dtype)
    out[:] = _border_fill(planes).astype(array.dtype).reshape(-1, *(1,) * len(new))
    out[(slice(None), *(slice(s, s + n) for s, n in zip(starts, new, strict=True)))] = planes
    pad = Resampling((1.0,) * len(new), tuple(-float(s) for s in starts))
    return out, resized.then(pad)


def resize_2d(array: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """Resize (C,H,W) to (C,size,size): scale the long side (pad) or the short side (crop)."""
    if array.ndim != 3:
        raise ValueError(f"resize_2d needs (C,H,W), got {array.shape}")
    return fit_to_size(array, size, mode)[0]


def resize_square(array: np.ndarray, size: int) -> np.ndarray:
    """Stretch square (C, H, W) images to (C, size, size) as ``medsynth train`` does (``--size``).

    Bilinear with antialiasing (torch), dtype kept, integers rounded and clipped to the dtype's
    limits: the rule that maps a dataset's images to a model's size when they differ, so
    image-to-image prompts reach the model exactly as its training images did.
    """
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(array.astype(np.float32))[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    info = np.iinfo(array.dtype) if np.issubdtype(array.dtype, np.integer) else None
    out = t.numpy()
    if info is not None:
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(array.dtype)
