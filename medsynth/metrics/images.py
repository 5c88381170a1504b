"""Pixels of any stored type -> float tensors in [0, 1] of one size, for measurements.

Channel-first, with the data's own channel count (grayscale stays one channel; only the
feature extractor makes 3 channels). Used by evaluate and by generate's twin privacy check, so
both measure the same images the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def to_unit(array: np.ndarray) -> np.ndarray:
    """Channel-first pixels -> float32 in [0, 1] by the dtype's range (floats: min-max)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    a = array.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def stack_images(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    """List of (C, H, W) arrays -> float tensor (N, C, size, size) in [0, 1] (antialiased resize)."""
    import torch
    import torch.nn.functional as F

    if not arrays:
        return torch.zeros(0, 1, size, size)
    out = []
    for a in arrays:
        t = torch.from_numpy(np.ascontiguousarray(to_unit(a)))[None]
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        out.append(t.clamp_(0, 1))
    return torch.cat(out)


MAX_SIZE = 64
"""Images are measured at their own size, at most this many pixels (quick on a CPU)."""


def measure_size(shape: tuple[int, ...]) -> int:
    """The size images of spatial ``shape`` are measured at: their longest side, at most 64."""
    return int(min(max(shape[-2:]), MAX_SIZE))
