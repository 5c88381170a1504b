"""Per-class sample grids during and after training (rows = classes, columns = samples).

Only the drawing lives here: the samples come from the shared sampler
(:func:`medsynth.models.sampler.denoise`, the loop generate uses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def grid_image(pixels: np.ndarray, row_labels: list[str], cols: int, *, low: float = 0.0,
               high: float = 255.0, scale: int | None = None) -> Any:
    """A PIL image of ``pixels`` ``(rows*cols, C, H, W)`` laid out in rows labelled on the left."""
    from PIL import Image, ImageDraw

    n, c, h, w = pixels.shape
    rows = len(row_labels)
    scale = scale or max(1, 96 // max(h, w))
    disp = pixels.astype(np.float64)
    if pixels.dtype != np.uint8:  # 16-bit: window to the recorded range for display
        disp = (disp - low) / max(high - low, 1e-9) * 255.0
    disp = np.clip(np.rint(disp), 0, 255).astype(np.uint8)
    if c == 1:
        disp = np.repeat(disp, 3, axis=1)
    label_w, pad = 110, 2
    H, W = h * scale, w * scale
    canvas = Image.new("RGB", (label_w + cols * (W + pad), rows * (H + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        draw.text((4, r * (H + pad) + H // 2 - 6), str(row_labels[r])[:16], fill="black")
        for k in range(cols):
            i = r * cols + k
            if i >= n:
                break
            tile = Image.fromarray(np.moveaxis(disp[i], 0, -1)).resize((W, H), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_w + k * (W + pad), r * (H + pad)))
    return canvas


def save_grid(image: Any, path: Path) -> Path:
    """Save a PIL grid atomically as PNG."""
    import io

    from medsynth.artifacts import atomic_write_bytes

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def in_chunks(sample: Any, size: int, per_image: dict[str, Any], **common: Any) -> Any:
    """``sample(**common, **per_image)`` in chunks of ``size`` images, concatenated.

    ``per_image`` holds the arguments with one entry per image (class ids or probabilities, text
    features and masks, seeds). A grid larger than a training batch then never needs more memory
    than one batch, and as every image has its own seeded generator it is the same in any chunk.
    """
    import torch

    n = len(per_image["seeds"])
    size = max(1, int(size))
    out = []
    for i in range(0, n, size):
        part = {k: v[i:i + size] for k, v in per_image.items()}
        out.append(sample(**common, **part))
    if len(out) == 1:
        return out[0]
    if isinstance(out[0], torch.Tensor):
        return torch.cat(out)
    return np.concatenate(out)
