"""Synthetic test images with known geometry (used until, and beside, the demo phantoms)."""

from __future__ import annotations

import numpy as np

SKIN = (222, 184, 152)


def lesion(size: int, a: float, b: float, *, angle: float = 0.4, wobble: float = 0.0,
           color: tuple[int, int, int] = (98, 58, 34), skin: tuple[int, int, int] = SKIN,
           center: tuple[float, float] | None = None, second: tuple[int, int, int] | None = None,
           lobe: float = 0.0, hairs: int = 0, seed: int = 0) -> np.ndarray:
    """(3, size, size) uint8 skin with an elliptic lesion of semi-axes a, b (pixels).

    ``wobble`` ragged border amplitude; ``second`` a second colour on the lesion's right half;
    ``lobe`` radius (fraction of a) of a lobe on the rim at 45 degrees (asymmetry); ``hairs`` dark lines across the image.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    cx, cy = center or ((size - 1) / 2, (size - 1) / 2)
    x, y = xx - cx, yy - cy
    xr = x * np.cos(angle) + y * np.sin(angle)
    yr = -x * np.sin(angle) + y * np.cos(angle)
    th = np.arctan2(yr, xr)
    r = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    r = r / (1 + wobble * np.sin(11 * th))
    m = r < 1
    if lobe:
        lx, ly = 0.7 * a, 0.7 * b
        m |= (xr - lx) ** 2 + (yr - ly) ** 2 < (lobe * a) ** 2
    img = np.empty((size, size, 3))
    img[:] = skin
    img[m] = color
    if second is not None:
        img[m & (xr > a * 0.2)] = second
    for _ in range(hairs):
        p0 = rng.uniform(0, size, 2)
        ang = rng.uniform(0, np.pi)
        t = np.linspace(-size, size, 4 * size)
        px, py = p0[0] + t * np.cos(ang), p0[1] + t * np.sin(ang)
        ok = (px >= 0) & (px < size) & (py >= 0) & (py < size)
        img[py[ok].astype(int), px[ok].astype(int)] = (40, 30, 25)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)


def chest(size: int, *, heart_frac: float = 0.42, opacity: str | None = None,
          zone: str = "lower", effusion: str | None = None, seed: int = 0) -> np.ndarray:
    """(1, size, size) uint16 PA chest phantom: body, two dark lungs, a bright heart.

    ``opacity`` 'left'|'right'|'bilateral' (patient sides) paints a bright blob in ``zone``;
    ``effusion`` fills the lung base on that side. The thorax (outer lung edges) spans 0.68 of
    the width, so heart width = heart_frac * 0.68 * size and CTR ~ heart_frac.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    img = np.full((size, size), 0.05)
    body = ((xx - 0.5) / 0.45) ** 2 + ((yy - 0.55) / 0.5) ** 2 < 1
    img[body] = 0.6
    lungs = []
    for cx in (0.31, 0.69):  # image left (patient right), image right (patient left)
        lung = ((xx - cx) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        img[lung] = 0.2
        lungs.append(lung)
    hw = heart_frac * 0.68 / 2
    heart = ((xx - 0.5) / hw) ** 2 + ((yy - 0.68) / 0.13) ** 2 < 1
    img[heart] = 0.75
    zy = {"upper": 0.33, "middle": 0.5, "lower": 0.66}[zone]
    sides = {"right": [0], "left": [1], "bilateral": [0, 1]}
    for i in sides.get(opacity or "", []):
        cx = (0.31, 0.69)[i]
        blob = (((xx - cx) / 0.09) ** 2 + ((yy - zy) / 0.08) ** 2 < 1) & lungs[i]
        img[blob] = 0.65
    for i in sides.get(effusion or "", []):
        img[lungs[i] & (yy > 0.66)] = 0.7
    img += rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 65535).astype(np.uint16)[None]
