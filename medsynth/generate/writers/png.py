"""PNG writer: 8-bit RGB, 8- or 16-bit grayscale, exactly as the training data was (lossless).

Values PNG cannot hold (int16 CT Hounsfield units, float32) are stored as 16-bit values through
a :class:`~medsynth.imaging.storage.Rescale` (``value = stored * slope + intercept``), written into
the file as a ``medsynth-rescale`` text chunk and into the synthetic set's manifest; medsynth's
reader applies it, so the values come back (HU exactly). See docs/intensities.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.imaging.save import can_png, save_png
from medsynth.imaging.storage import Rescale


def write_png(array: np.ndarray, path: str | Path, rescale: Rescale | None = None) -> Path:
    """Write (1, H, W) uint8/uint16 or (3, H, W) uint8 as a PNG file, atomically.

    The bit depth is the array's own: 16-bit radiographs stay 16-bit (PNG mode I;16) and are
    never squashed to 8 bits; grayscale is never turned into RGB. (1, H, W) int16 or float32
    need ``rescale`` (see module doc).
    """
    if rescale is not None:
        if array.ndim != 3 or array.shape[0] != 1:
            raise ValueError(f"a rescaled PNG holds (1, H, W) values, got {array.shape}")
        return save_png(array, path, rescale)
    if not can_png(array):
        raise ValueError(
            f"PNG holds (1, H, W) uint8/uint16 or (3, H, W) uint8, got {array.shape} {array.dtype}"
            " (int16/float32 values need a rescale)"
        )
    return save_png(array, path)
