"""Real-looking test images cut from the derm phantoms at a fine scale (20 mm over 256 px):
skin texture patches without any lesion, and small lesions in full view, at their true pixel
size (:data:`MM_PER_PX`). A patch has what the phantom's skin has: texture, furrows, hairs,
vignetting, the dermoscope's dark rim, noise and blur."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SIZE, CROP, LESION_CROP = 256, 64, 112
MM_PER_PX = 20.0 / SIZE
SEED = 11


@lru_cache(maxsize=64)
def _phantom(index: int) -> tuple[np.ndarray, dict]:
    from medsynth.data.demo import derm

    cls = derm.CLASSES[index % 3]
    return derm.render(cls, index, SIZE, SEED)


def skin_patches(n: int) -> list[np.ndarray]:
    """``n`` corner crops (CROP px) lying well clear of their phantom's lesion."""
    out: list[np.ndarray] = []
    for index in range(64):
        arr, row = _phantom(index)
        cx, cy = row["center_x"], row["center_y"]
        radius = row["diameter_mm"] / 2 / MM_PER_PX
        for y0 in (0, SIZE - CROP):
            for x0 in (0, SIZE - CROP):
                # Nearest point of the crop to the lesion centre, 30 % beyond the lesion's radius.
                ny, nx = np.clip(cy, y0, y0 + CROP), np.clip(cx, x0, x0 + CROP)
                if np.hypot(ny - cy, nx - cx) > 1.3 * radius + 2:
                    out.append(arr[:, y0:y0 + CROP, x0:x0 + CROP])
                    if len(out) == n:
                        return out
    raise AssertionError("not enough clear skin in the phantoms")


def whole_lesions(n: int) -> list[np.ndarray]:
    """``n`` LESION_CROP-px crops centred on phantom lesions that lie fully inside them."""
    out: list[np.ndarray] = []
    for index in range(64):
        arr, row = _phantom(index)
        if row["diameter_mm"] / MM_PER_PX > LESION_CROP - 24:
            continue
        y0 = int(round(row["center_y"])) - LESION_CROP // 2
        x0 = int(round(row["center_x"])) - LESION_CROP // 2
        if min(y0, x0) < 0 or max(y0, x0) > SIZE - LESION_CROP:
            continue
        out.append(arr[:, y0:y0 + LESION_CROP, x0:x0 + LESION_CROP])
        if len(out) == n:
            return out
    raise AssertionError("not enough small lesions in the phantoms")
