"""How image values that a format cannot hold directly are stored: ``value = stored * slope + intercept``.

PNG holds unsigned 8/16-bit integers only, so signed CT values (Hounsfield units, int16) and
real-valued MR (float32) are written as 16-bit stored values with a linear map, DICOM's own
Rescale Slope / Rescale Intercept. The map travels with the file (a PNG text chunk
``medsynth-rescale``; Rescale Slope/Intercept in DICOM) and in the synthetic set's manifest
and ``samples.csv``; :func:`medsynth.imaging.readers.read_image` applies it, so a PNG written from
HU reads back as the same HU. See docs/intensities.md.

- int16 (CT): ``stored = HU + 1024`` (slope 1, intercept -1024, the usual CT convention), or
  the lowest value when it is below -1024: exact, every HU survives.
- float32: ``stored = round((value - low) / slope)`` with ``slope = (high - low) / 65535`` over the
  model's value range: values survive to within ``slope / 2``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

PNG_TEXT_KEY = "medsynth-rescale"
"""Keyword of the PNG tEXt chunk holding the map (JSON)."""
CT_INTERCEPT = -1024.0
"""Stored 0 = -1024 HU, the intercept of most CT scanners' files."""


@dataclasses.dataclass(frozen=True)
class Rescale:
    """``value = stored * slope + intercept``; stored values are uint16."""

    slope: float
    """Value per stored step (1 for integer data: exact)."""
    intercept: float
    """Value of stored 0."""
    dtype: str
    """dtype of the values once mapped back: int16 or float32."""
    unit: str = ""
    """Unit of the values, e.g. HU for CT (DICOM Rescale Type); "" when unspecified."""

    def __post_init__(self) -> None:
        if not self.slope > 0:
            raise ValueError(f"rescale slope must be positive, got {self.slope}")
        if self.dtype not in ("int16", "float32"):
            raise ValueError(f"rescale values must be int16 or float32, got {self.dtype}")

    @classmethod
    def for_values(cls, dtype: str, low: float, high: float, modality: str = "") -> Rescale | None:
        """The map that stores values of ``dtype`` in ``[low, high]`` as uint16; None when the
        values are uint8/uint16 already (stored as they are)."""
        unit = "HU" if modality.upper() == "CT" else ""
        if dtype in ("uint8", "uint16"):
            return None
        if dtype == "int16":
            intercept = min(CT_INTERCEPT, math.floor(low))
            if high - intercept > 65535:
                intercept = math.floor(low)
            return cls(1.0, float(intercept), "int16", unit)
        span = float(high) - float(low)
        return cls(span / 65535.0 if span > 0 else 1.0, float(low), "float32", unit)

    def to_stored(self, values: np.ndarray) -> np.ndarray:
        """Values -> uint16 stored values (rounded, clipped to 0..65535)."""
        v = (np.asarray(values, dtype=np.float64) - self.intercept) / self.slope
        return np.clip(np.rint(v), 0, 65535).astype(np.uint16)

    def to_values(self, stored: np.ndarray) -> np.ndarray:
        """Stored values -> values of :attr:`dtype`."""
        v = np.asarray(stored, dtype=np.float64) * self.slope + self.intercept
        if self.dtype == "int16":
            return np.clip(np.rint(v), -32768, 32767).astype(np.int16)
        return v.astype(np.float32)

    def describe(self) -> str:
        """One line for people: ``HU = stored * 1 + -1024``."""
        name = self.unit or "value"
        return f"{name} = stored * {self.slope:.9g} + {self.intercept:.9g}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rescale:
        return cls(float(d["slope"]), float(d["intercept"]), str(d["dtype"]), str(d.get("unit", "")))

    def to_text(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> Rescale:
        return cls.from_dict(json.loads(text))
