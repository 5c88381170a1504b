"""The in-memory image every reader returns.

Layout follows MONAI's channel-first convention: 2D images are ``(C, H, W)``; 3D volumes are
``(C, D, H, W)`` (slices, rows, columns). The dtype is the file's own: uint8 stays uint8,
16-bit stays 16-bit, grayscale keeps one channel.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Image:
    array: np.ndarray
    """Channel-first pixels, dtype as stored (after DICOM modality/VOI LUTs when applied)."""
    modality: str = "OT"
    """DICOM-style modality code: OT (other), CR, DX, CT, MR, XC (photo/dermoscopy), ..."""
    spacing: tuple[float, ...] | None = None
    """Pixel/voxel spacing in mm, in array axis order (rows, cols) or (slices, rows, cols)."""
    affine: np.ndarray | None = None
    """4x4 voxel-to-world (RAS+, NIfTI) affine when the source has one."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def spatial_dims(self) -> int:
        return self.array.ndim - 1

    @property
    def bit_depth(self) -> int:
        if self.array.dtype == np.uint8:
            return 8
        if self.array.dtype in (np.uint16, np.int16):
            return 16
        return int(self.array.dtype.itemsize * 8)


def to_channel_first(arr: np.ndarray) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, 3|4) -> (3, H, W) (alpha dropped)."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return np.ascontiguousarray(np.moveaxis(arr[..., :3], -1, 0))
    raise ValueError(f"unsupported image shape {arr.shape}")


def narrowest_integer(arr: np.ndarray) -> np.ndarray:
    """Store integer-valued data in uint8/uint16/int16 when it fits, else float32 (never squash)."""
    if arr.dtype in (np.uint8, np.uint16, np.int16):
        return arr
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) or np.array_equal(arr, np.round(arr)):
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 255 and arr.dtype == np.uint8:
            return arr
        if lo >= 0 and hi <= 65535:
            return arr.astype(np.uint16)
        if lo >= -32768 and hi <= 32767:
            return arr.astype(np.int16)
    return arr.astype(np.float32)
