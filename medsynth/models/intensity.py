"""Pixel intensities <-> the denoiser's [-1, 1] range, recorded in the bundle.

The mapping is linear between ``low`` and ``high`` (the training data's observed range for
16-bit data, the full 0..255 range for 8-bit data), so 16-bit data are never squashed to
8 bits: ``to_pixels(from_pixels(a)) == a`` for every integer value inside the range.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from medsynth.errors import MedsynthError

_LIMITS = {"uint8": (0, 255), "uint16": (0, 65535), "int16": (-32768, 32767)}


@dataclasses.dataclass
class IntensityMapping:
    """Linear map ``[low, high]`` (pixel values) <-> ``[-1, 1]`` (model values)."""

    dtype: str
    """Pixel dtype of the data and of generated images: uint8, uint16, int16 or float32."""
    low: float
    """Pixel value mapped to -1."""
    high: float
    """Pixel value mapped to +1."""

    def __post_init__(self) -> None:
        if self.dtype not in (*_LIMITS, "float32"):
            raise MedsynthError(f"unsupported pixel dtype {self.dtype!r} (uint8, uint16, int16, float32)")
        if not self.high > self.low:
            raise MedsynthError(f"intensity mapping needs high > low, got [{self.low}, {self.high}]")

    @classmethod
    def for_data(cls, arrays: np.ndarray) -> IntensityMapping:
        """The mapping for a stack of training images: 8-bit uses 0..255, others the data range."""
        dtype = str(arrays.dtype)
        if dtype == "uint8":
            return cls("uint8", 0.0, 255.0)
        lo, hi = float(arrays.min()), float(arrays.max())
        if hi <= lo:
            hi = lo + 1.0
        return cls(dtype if dtype in _LIMITS else "float32", lo, hi)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityMapping:
        return cls(str(d["dtype"]), float(d["low"]), float(d["high"]))

    def from_pixels(self, arr: np.ndarray) -> np.ndarray:
        """Pixels (any shape) -> float32 in [-1, 1] (values outside [low, high] are clipped)."""
        x = (np.asarray(arr, dtype=np.float64) - self.low) / (self.high - self.low) * 2.0 - 1.0
        return np.clip(x, -1.0, 1.0).astype(np.float32)

    def to_pixels(self, x: Any) -> np.ndarray:
        """Model values (numpy or torch, any shape) -> pixels of :attr:`dtype`, rounded and clipped."""
        if hasattr(x, "detach"):
            x = x.detach().float().cpu().numpy()
        v = (np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0
        v = v * (self.high - self.low) + self.low
        if self.dtype == "float32":
            return v.astype(np.float32)
        lo, hi = _LIMITS[self.dtype]
        return np.clip(np.rint(v), lo, hi).astype(self.dtype)
