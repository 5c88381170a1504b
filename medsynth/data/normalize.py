"""Intensity normalisation by modality, for the training path (``data import --normalize``).

Off by default: medsynth keeps values as they are (docs/intensities.md). Turned on, it writes
the values a generative model trains on best, and records what it did in the manifest:

- **MR** (arbitrary scanner units, a different scale per scan): each image's own percentiles
  (``0.5`` and ``99.5`` by default) become 0 and 1, values clipped to [0, 1], float32 (the
  CCELLA/MAISI practice);
- **CT** (Hounsfield units, one scale for all): clipped to a window (``-1000..1000`` HU by
  default, air to bone), still int16 HU: generated images stay in HU.

Other modalities are left as they are (a note says so).
"""

from __future__ import annotations

import numpy as np

from medsynth.choices import Normalize, values

NORMALIZE_MODES = values(Normalize)


def normalize_mr(array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Per-image percentile scaling to [0, 1] (float32)."""
    a = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(a, percentiles)
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def window_ct(array: np.ndarray, window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """Hounsfield units clipped to ``window`` (int16 stays int16)."""
    lo, hi = window
    out = np.clip(array, lo, hi)
    return out.astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else out


def normalize(array: np.ndarray, modality: str, mode: str, *,
              percentiles: tuple[float, float] = (0.5, 99.5),
              window: tuple[float, float] = (-1000.0, 1000.0)) -> tuple[np.ndarray, str | None]:
    """Apply ``mode`` (``auto`` picks by ``modality``) to one grayscale image; returns the new
    array and what was done (``mr``, ``ct``) or None when it was left as it is."""
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize mode must be one of {NORMALIZE_MODES}")
    kind = {"MR": "mr", "CT": "ct"}.get(modality.upper()) if mode == "auto" else mode
    if kind in (None, "none") or array.shape[0] != 1:
        return array, None
    if kind == "mr":
        return normalize_mr(array, percentiles), "mr"
    return window_ct(array, window), "ct"
