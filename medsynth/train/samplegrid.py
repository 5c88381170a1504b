"""Per-class sample grids during and after training (rows = classes, columns = samples).

The sampler is a short DDIM loop with classifier-free guidance, written out in full:
the ``generate`` stage owns the full-featured samplers; this one only shows progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def sample(unet: Any, scheduler_config: dict[str, Any], class_ids: Any, hidden: Any, mask: Any, *,
           null_class: int, channels: int, size: int, steps: int, guidance: float, seed: int,
           device: Any) -> Any:
    """Draw images in [-1, 1] ``(B, C, H, W)`` for ``class_ids`` and text features ``hidden``/``mask``."""
    import torch
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    b = len(class_ids)
    dtype = next(unet.parameters()).dtype
    g = torch.Generator().manual_seed(seed)
    # 1. start from seeded Gaussian noise (drawn on the CPU: identical on every device)
    x = torch.randn(b, channels, size, size, generator=g).to(device, dtype) * sched.init_noise_sigma
    # 2. conditional and unconditional inputs side by side (null class + null text)
    c = torch.as_tensor(class_ids, device=device).long()
    cond_h = hidden.to(device, dtype)
    null_h = torch.zeros_like(cond_h)
    cond_m = mask.to(device)
    null_m = torch.zeros_like(cond_m)
    null_m[:, 0] = 1
    h2 = torch.cat([cond_h, null_h])
    m2 = torch.cat([cond_m, null_m])
    c2 = torch.cat([c, torch.full_like(c, null_class)])
    with torch.no_grad():
        for t in sched.timesteps:
            # 3. one UNet call for both halves, then guidance: u + w (c - u)
            out = unet(torch.cat([x, x]), t, encoder_hidden_states=h2, class_labels=c2,
                       encoder_attention_mask=m2).sample
            cond, uncond = out.chunk(2)
            pred = uncond + guidance * (cond - uncond)
            # 4. one DDIM step
            x = sched.step(pred, t, x).prev_sample
    return x.float().clamp(-1, 1)


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
            tile = Image.fromarray(np.moveaxis(disp[i], 0, -1)).resize((W, H), Image.NEAREST)
            canvas.paste(tile, (label_w + k * (W + pad), r * (H + pad)))
    return canvas


def save_grid(image: Any, path: Path) -> Path:
    """Save a PIL grid atomically as PNG."""
    import io

    from medsynth.artifacts import atomic_write_bytes

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
