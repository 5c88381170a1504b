"""Aspect-preserving resize for channel-first arrays, keeping dtype (no 16-to-8-bit squash)."""

from __future__ import annotations

import numpy as np

RESIZE_MODES = ("pad", "crop")


def _resize_plane(plane: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image as PILImage

    im = PILImage.fromarray(plane.astype(np.float32), mode="F")
    return np.asarray(im.resize((w, h), PILImage.Resampling.BICUBIC if (w * h) > plane.size else PILImage.Resampling.LANCZOS))


def resize_2d(array: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """Resize (C,H,W) to (C,size,size): scale the long side (pad) or the short side (crop)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}")
    c, h, w = array.shape
    if h == size and w == size:
        return array
    scale = size / max(h, w) if mode == "pad" else size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    planes = np.stack([_resize_plane(array[i], nw, nh) for i in range(c)])
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        planes = np.clip(np.round(planes), info.min, info.max)
    planes = planes.astype(array.dtype)
    if mode == "crop":
        top, left = (nh - size) // 2, (nw - size) // 2
        return np.ascontiguousarray(planes[:, top : top + size, left : left + size])
    # pad with the border median so the padding does not add a new intensity edge
    fill = np.median(np.concatenate([planes[:, 0, :], planes[:, -1, :]], axis=1), axis=1)
    out = np.empty((c, size, size), dtype=array.dtype)
    out[:] = fill.astype(array.dtype)[:, None, None]
    top, left = (size - nh) // 2, (size - nw) // 2
    out[:, top : top + nh, left : left + nw] = planes
    return out
