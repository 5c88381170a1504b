"""Dermoscopy attributes measured from the pixels (ABCD rule, colours, structures).

The pipeline is classical image analysis, each step chosen to survive what dermoscopy photos
(and the demo phantoms) contain: vignetting, hairs, noise and blur.

1. Hairs: a black top-hat on luminance finds thin dark lines; they are painted over with the
   grey closing (the DullRazor idea) before segmentation.
2. Background: a quadratic surface per colour channel fitted to the skin (robust to vignetting).
3. Lesion: Otsu threshold of the colour distance to that surface, opened, the component nearest
   the centre, holes filled.
4. A (asymmetry): the mask reflected about each principal axis; an axis counts when the
   non-overlapping area exceeds a share of the lesion area.
5. B (border): sub-pixel contour length against the convex hull's, mapped to 0..1.
6. C (colours): every lesion pixel labelled with the nearest vocabulary colour in CIE Lab; a colour
   is present when it covers a minimum share of the lesion.
7. D (diameter): the largest Feret diameter of the contour, in mm.
8. Structures: dots/globules (small dark blobs), streaks (thin radial protrusions at the border),
   pigment network (mid-frequency texture energy), blue-white veil (blue-grey and white together).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

COLOR_VOCAB = ("light_brown", "dark_brown", "black", "blue_grey", "red", "white")
"""Dermoscopy colour vocabulary, in the canonical order used in ``labels.csv``."""
STRUCTURE_VOCAB = ("pigment_network", "dots_globules", "streaks", "blue_white_veil")
"""Dermoscopy structure vocabulary, in canonical order (``none`` when empty)."""
DERM_COLUMNS = ("diameter_mm", "asymmetry", "border_irregularity", "border", "colors", "n_colors",
                "structures", "skin_tone", "hair", "center_x", "center_y")
"""The keys :func:`measure_derm` returns (the demo ``labels.csv`` attribute columns)."""

# Reference sRGB values of the vocabulary colours (typical dermoscopy appearance).
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "light_brown": (176, 116, 72),
    "dark_brown": (98, 58, 34),
    "black": (32, 26, 26),
    "blue_grey": (104, 116, 138),
    "red": (186, 62, 64),
    "white": (232, 226, 222),
}
MIN_COLOR_SHARE = 0.05
"""A colour counts as present when at least this share of lesion pixels is nearest to it."""
ASYMMETRY_THRESHOLD = 0.12
"""Share of lesion area that must not overlap its reflection for an axis to count as asymmetric."""
BORDER_SCALE = 6.0
"""border_irregularity = clip(BORDER_SCALE * (contour length / hull length - 1), 0, 1)."""
IRREGULAR_AT = 0.5
"""``border`` is ``irregular`` when border_irregularity >= this (the demo's rule)."""


# ---------------------------------------------------------------------------------------------
# helpers


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1], shape (..., 3) -> CIE Lab (D65)."""
    c = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                    200 * (f[..., 1] - f[..., 2])], axis=-1)
    return lab


_VOCAB_LAB = _rgb_to_lab(np.array([COLOR_RGB[c] for c in COLOR_VOCAB], dtype=float) / 255.0)


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of a 1-D sample."""
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def _fit_surface(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares quadratic surface per channel fitted on ``mask`` pixels; img (H, W, C)."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], axis=-1)
    a = basis[mask]
    out = np.empty_like(img)
    for ch in range(img.shape[-1]):
        coef, *_ = np.linalg.lstsq(a, img[..., ch][mask], rcond=None)
        out[..., ch] = basis @ coef
    return out


def _largest_central_component(mask: np.ndarray) -> np.ndarray:
    """The connected component that is large and close to the image centre."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    idx = np.arange(1, n + 1)
    areas = ndi.sum(mask, lab, idx)
    cy, cx = (np.array(mask.shape) - 1) / 2
    coms = np.array(ndi.center_of_mass(mask, lab, idx))
    dist = np.hypot(coms[:, 0] - cy, coms[:, 1] - cx) / max(mask.shape)
    score = areas * np.exp(-3 * dist)
    return lab == idx[int(np.argmax(score))]


def _contour(mask: np.ndarray) -> np.ndarray:
    """Longest sub-pixel iso-contour (x, y) of a slightly smoothed mask."""
    import contourpy

    z = ndi.gaussian_filter(np.pad(mask.astype(float), 2), 0.7)
    lines = contourpy.contour_generator(z=z).lines(0.5)
    if not lines:
        return np.zeros((0, 2))
    best = max(lines, key=len)
    return np.asarray(best, dtype=float) - 2.0


def _perimeter(pts: np.ndarray) -> float:
    if len(pts) < 2:
        return 0.0
    closed = np.vstack([pts, pts[:1]])
    return float(np.sum(np.hypot(*np.diff(closed, axis=0).T)))


# ---------------------------------------------------------------------------------------------
# steps


def hair_mask(lum: np.ndarray) -> np.ndarray:
    """Thin dark lines (hairs): black top-hat of luminance above a robust threshold."""
    size = max(3, int(round(lum.shape[0] / 24)) | 1)
    closed = ndi.grey_closing(lum, footprint=_disk(size // 2 + 1))
    tophat = closed - lum
    thr = max(0.08, float(np.median(tophat) + 6 * np.median(np.abs(tophat - np.median(tophat)))))
    m = tophat > thr
    # Hairs are long: drop tiny specks (noise, dots inside the lesion are handled separately).
    lab, n = ndi.label(m, structure=np.ones((3, 3)))
    if n == 0:
        return m
    sizes = ndi.sum(m, lab, np.arange(1, n + 1))
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes >= max(6, lum.shape[0] / 6)
    return keep[lab]


def segment_lesion(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lesion mask, the hair-free image and the fitted skin surface; rgb (H, W, 3) in [0, 1]."""
    h, w, _ = rgb.shape
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    hairs = hair_mask(lum)
    clean = rgb.copy()
    if hairs.any():
        closed = np.stack([ndi.grey_closing(rgb[..., c], footprint=_disk(max(2, h // 40)))
                           for c in range(3)], axis=-1)
        grown = ndi.binary_dilation(hairs, iterations=1)
        clean[grown] = closed[grown]
    clean = ndi.gaussian_filter(clean, sigma=(max(h / 128, 0.5), max(w / 128, 0.5), 0))
    # Start from the outer ring as skin, then refit on everything that is not lesion.
    ring = np.zeros((h, w), bool)
    b = max(2, h // 10)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    skin = ring
    mask = np.zeros((h, w), bool)
    for _ in range(2):
        bg = _fit_surface(clean, skin)
        dist = np.linalg.norm(clean - bg, axis=-1) / (np.linalg.norm(bg, axis=-1) + 1e-3)
        thr = max(_otsu(dist), 0.06)
        mask = dist > thr
        mask = ndi.binary_opening(mask, structure=_disk(max(1, h // 64)))
        if not mask.any():
            break
        mask = ndi.binary_fill_holes(_largest_central_component(mask))
        skin = ~ndi.binary_dilation(mask, iterations=max(2, h // 32))
        if skin.sum() < 0.05 * h * w:
            skin = ring
    return mask, clean, bg


def feret_diameter(pts: np.ndarray) -> float:
    """Largest distance between two points of a contour (via its convex hull)."""
    if len(pts) < 3:
        return 0.0
    from scipy.spatial import ConvexHull

    try:
        hull = pts[ConvexHull(pts).vertices]
    except Exception:  # degenerate (collinear) contour
        hull = pts
    d = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def asymmetry_scores(mask: np.ndarray) -> tuple[float, float]:
    """Non-overlap share of the mask with its reflection about the major and minor axes."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 5:
        return 0.0, 0.0
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy]))
    evals, evecs = np.linalg.eigh(cov)
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    p = np.stack([xx - cx, yy - cy], axis=-1)
    scores = []
    for k in (1, 0):  # major axis, then minor
        u = evecs[:, k]
        # Reflect about the line through the centroid along u: p' = 2 (p.u) u - p.
        proj = p @ u
        refl = 2 * proj[..., None] * u - p
        rx, ry = refl[..., 0] + cx, refl[..., 1] + cy
        m2 = ndi.map_coordinates(mask.astype(float), [ry, rx], order=1, mode="constant") > 0.5
        scores.append(float(np.logical_xor(mask, m2).sum() / (2 * mask.sum())))
    return scores[0], scores[1]


def color_shares(lab_pixels: np.ndarray) -> dict[str, float]:
    """Share of pixels whose nearest vocabulary colour (Lab distance) is each colour."""
    if len(lab_pixels) == 0:
        return {c: 0.0 for c in COLOR_VOCAB}
    d = np.linalg.norm(lab_pixels[:, None, :] - _VOCAB_LAB[None], axis=-1)
    nearest = np.argmin(d, axis=1)
    counts = np.bincount(nearest, minlength=len(COLOR_VOCAB)) / len(lab_pixels)
    return {c: float(counts[i]) for i, c in enumerate(COLOR_VOCAB)}


def _structures(rgb: np.ndarray, mask: np.ndarray, shares: dict[str, float],
                hairs: np.ndarray) -> list[str]:
    h = mask.shape[0]
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    inner = ndi.binary_erosion(mask, iterations=max(1, h // 64)) & ~hairs
    found = []
    if inner.sum() > 20:
        # Pigment network: energy of a band-pass (difference of Gaussians) at the mesh scale.
        s = max(h / 96, 0.6)
        band = ndi.gaussian_filter(lum, s) - ndi.gaussian_filter(lum, 3 * s)
        if float(np.std(band[inner])) > 0.035:
            found.append("pigment_network")
        # Dots/globules: small blobs clearly darker than their neighbourhood.
        local = ndi.gaussian_filter(lum, 2.5 * s) - ndi.gaussian_filter(lum, 0.6 * s)
        blobs = (local > 0.08) & inner
        lab, n = ndi.label(blobs)
        if n:
            sizes = ndi.sum(blobs, lab, np.arange(1, n + 1))
            if int(((sizes >= 2) & (sizes <= (h / 10) ** 2)).sum()) >= 3:
                found.append("dots_globules")
    # Streaks: thin protrusions at the rim that an opening removes.
    opened = ndi.binary_opening(mask, structure=_disk(max(2, h // 24)))
    spikes = mask & ~opened
    lab, n = ndi.label(spikes)
    if n:
        sizes = ndi.sum(spikes, lab, np.arange(1, n + 1))
        if int((sizes >= max(3, h / 16)).sum()) >= 3:
            found.append("streaks")
    if shares["blue_grey"] >= 0.08 and shares["white"] >= 0.02:
        found.append("blue_white_veil")
    return found


def skin_tone_of(skin_rgb: np.ndarray) -> int:
    """Fitzpatrick-like type 1..6 from the skin's Lab lightness."""
    lightness = float(_rgb_to_lab(np.clip(skin_rgb, 0, 1)[None])[0, 0])
    edges = (75, 65, 55, 45, 35)  # L* above 75 -> 1, ... below 35 -> 6
    return 1 + sum(lightness < e for e in edges)


def count_hairs(hairs: np.ndarray) -> int:
    """Number of hairs: connected thin dark line segments, long ones counted once."""
    lab, n = ndi.label(hairs, structure=np.ones((3, 3)))
    return int(n)


# ---------------------------------------------------------------------------------------------


def measure_derm(array: np.ndarray, mm_per_px: float) -> dict[str, Any]:
    """Measure the ABCD attributes, colours and structures of a dermoscopy image.

    Args:
        array: channel-first RGB image, ``(3, H, W)`` (uint8, or float in [0, 1]).
        mm_per_px: pixel size in millimetres (the demo set: 20 mm field of view / image size).

    Returns:
        A dict with exactly :data:`DERM_COLUMNS` as keys; ``colors`` and ``structures`` are
        semicolon-joined in vocabulary order (``structures`` is ``none`` when empty).
    """
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"measure_derm needs a (3, H, W) RGB array, got {array.shape}")
    rgb = np.moveaxis(array, 0, -1).astype(np.float64)
    if array.dtype == np.uint8:
        rgb /= 255.0
    elif array.dtype == np.uint16:
        rgb /= 65535.0
    h, w, _ = rgb.shape
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    hairs = hair_mask(lum)
    mask, clean, bg = segment_lesion(rgb)
    if mask.sum() < 4:
        return {"diameter_mm": 0.0, "asymmetry": 0, "border_irregularity": 0.0, "border": "regular",
                "colors": "", "n_colors": 0, "structures": "none",
                "skin_tone": skin_tone_of(np.median(rgb.reshape(-1, 3), axis=0)),
                "hair": count_hairs(hairs), "center_x": (w - 1) / 2, "center_y": (h - 1) / 2}
    pts = _contour(mask)
    diameter_px = feret_diameter(pts)
    a1, a2 = asymmetry_scores(mask)
    asym = int(a1 > ASYMMETRY_THRESHOLD) + int(a2 > ASYMMETRY_THRESHOLD)
    hull_len = 0.0
    if len(pts) >= 3:
        from scipy.spatial import ConvexHull

        try:
            hull = pts[ConvexHull(pts).vertices]
            hull_len = _perimeter(hull)
        except Exception:
            hull_len = 0.0
    ratio = _perimeter(pts) / hull_len if hull_len > 0 else 1.0
    irregularity = float(np.clip(BORDER_SCALE * (ratio - 1.0), 0.0, 1.0))
    # Colours from the original pixels (not the smoothed ones) minus hairs.
    inside = mask & ~ndi.binary_dilation(hairs, iterations=1)
    shares = color_shares(_rgb_to_lab(rgb[inside]))
    colors = [c for c in COLOR_VOCAB if shares[c] >= MIN_COLOR_SHARE]
    structures = _structures(rgb, mask, shares, hairs)
    skin = ~ndi.binary_dilation(mask, iterations=max(2, h // 32)) & ~hairs
    skin_rgb = np.median(rgb[skin], axis=0) if skin.any() else np.median(bg.reshape(-1, 3), axis=0)
    ys, xs = np.nonzero(mask)
    return {
        "diameter_mm": round(diameter_px * float(mm_per_px), 3),
        "asymmetry": asym,
        "border_irregularity": round(irregularity, 3),
        "border": "irregular" if irregularity >= IRREGULAR_AT else "regular",
        "colors": ";".join(colors),
        "n_colors": len(colors),
        "structures": ";".join(structures) if structures else "none",
        "skin_tone": skin_tone_of(skin_rgb),
        "hair": count_hairs(hairs),
        "center_x": round(float(xs.mean()), 2),
        "center_y": round(float(ys.mean()), 2),
    }


def describe_shape(area_px: float) -> float:
    """Diameter of the circle of the same area (a helper for tests and reports)."""
    return 2 * math.sqrt(area_px / math.pi)
