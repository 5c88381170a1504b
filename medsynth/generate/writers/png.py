"""PNG writer: 8-bit RGB, 8- or 16-bit grayscale, exactly as the training data was (lossless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.data.save import can_png, save_png


def write_png(array: np.ndarray, path: str | Path) -> Path:
    """Write (1, H, W) uint8/uint16 or (3, H, W) uint8 as a PNG file, atomically.

    The bit depth is the array's own: 16-bit radiographs stay 16-bit (PNG mode I;16) and are
    never squashed to 8 bits; grayscale is never turned into RGB.
    """
    if not can_png(array):
        raise ValueError(
            f"PNG holds (1, H, W) uint8/uint16 or (3, H, W) uint8, got {array.shape} {array.dtype}"
        )
    return save_png(array, path)
