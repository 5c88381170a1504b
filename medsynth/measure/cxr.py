"""Chest radiograph attributes measured from the pixels (PA view, radiological convention).

Radiological convention: the patient's left is on the image's right. Intensities follow
MONOCHROME2 (air dark, bone and fluid bright), any bit depth.

1. Lungs: the dark regions inside the body (Otsu on the smoothed image, components that do not
   touch the image border), one per image half.
2. Expected lung fields: each lung's convex hull joined with the mirrored hull of the other lung,
   so a lung that lost area to an opacity or effusion is compared with its healthy shape.
3. Opacity: the part of an expected lung field that is not dark lung; extent per side; side and
   zone (upper/middle/lower third of the lung height) of the opaque pixels.
4. Cardiothoracic ratio: the widest gap between the lungs in the lower half of the lung fields
   (the heart shadow) over the widest outer distance between the lungs (the thorax).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medsynth.measure.derm import _otsu

CXR_COLUMNS = ("side", "zone", "opacity_extent", "ctr", "heart_width_px", "thorax_width_px")
"""The keys :func:`measure_cxr` returns (the demo ``labels.csv`` attribute columns)."""
MIN_EXTENT = 0.06
"""A side counts as affected when at least this share of its expected lung field is opaque."""


def _normalize(array: np.ndarray) -> np.ndarray:
    a = array.astype(np.float64)
    if a.ndim == 3:
        a = a.mean(axis=0)
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)


def _hull_mask(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a binary mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return mask.copy()
    from matplotlib.path import Path as MplPath
    from scipy.spatial import ConvexHull

    pts = np.stack([xs, ys], axis=1).astype(float)
    try:
        hull = pts[ConvexHull(pts).vertices]
    except Exception:
        return mask.copy()
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    inside = MplPath(hull).contains_points(np.stack([xx.ravel(), yy.ravel()], 1), radius=0.5)
    return inside.reshape(h, w) | mask


def segment_lungs(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dark lung masks on the image's left and right halves (either may be empty)."""
    h, w = img.shape
    sm = ndi.gaussian_filter(img, max(h / 128, 0.7))
    # Threshold between lung and soft tissue, computed inside the body only.
    body = sm > _otsu(sm.ravel()) * 0.5
    body = ndi.binary_fill_holes(ndi.binary_closing(body, iterations=2))
    vals = sm[body] if body.sum() > 0.1 * h * w else sm.ravel()
    dark = (sm < _otsu(vals)) & body
    dark = ndi.binary_opening(dark, iterations=max(1, h // 64))
    lab, n = ndi.label(dark)
    halves = []
    for half in (slice(0, w // 2), slice(w // 2, w)):
        best, best_area = np.zeros_like(dark), 0
        for i in range(1, n + 1):
            comp = lab == i
            ys, xs = np.nonzero(comp)
            touches = ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1
            cx = xs.mean()
            if touches or not (half.start <= cx < half.stop):
                continue
            if len(xs) > best_area:
                best, best_area = comp, len(xs)
        halves.append(ndi.binary_fill_holes(best) if best_area > 0.002 * h * w else best)
    return halves[0], halves[1]


def segment_heart(img: np.ndarray, left: np.ndarray, right: np.ndarray,
                  expected: list[np.ndarray]) -> np.ndarray:
    """The heart shadow: the non-lung region between the lung centres in the lower lung rows."""
    h, w = img.shape
    if not left.any() or not right.any():
        return np.zeros_like(left)
    rows = np.nonzero(expected[0].any(1) & expected[1].any(1))[0]
    if len(rows) < 3:
        return np.zeros_like(left)
    top, bottom = rows.min(), rows.max()
    xl, xr = int(np.nonzero(left)[1].mean()), int(np.nonzero(right)[1].mean())
    box = np.zeros_like(left)
    # The heart lies in the lower half of the lung fields, between the lung centres.
    box[top + (bottom - top) // 2:bottom + 1, xl:xr + 1] = True
    cand = box & ~left & ~right
    cand = ndi.binary_opening(cand, iterations=max(1, h // 64))
    lab, n = ndi.label(cand)
    if n == 0:
        return cand
    # The component crossing the midline with the largest area.
    mid = lab[:, (xl + xr) // 2]
    ids = [i for i in np.unique(mid) if i]
    if not ids:
        return np.zeros_like(left)
    areas = ndi.sum(cand, lab, ids)
    return lab == ids[int(np.argmax(areas))]


def measure_cxr(array: np.ndarray) -> dict[str, Any]:
    """Measure finding side, zone, opacity extent and the cardiothoracic ratio of a PA chest film.

    Args:
        array: channel-first image ``(1, H, W)`` (uint8/uint16/float), MONOCHROME2.

    Returns:
        A dict with exactly :data:`CXR_COLUMNS` as keys. ``side`` is the patient's side
        (image left = patient's right).
    """
    if array.ndim != 3:
        raise ValueError(f"measure_cxr needs a (C, H, W) array, got {array.shape}")
    img = _normalize(array)
    h, w = img.shape
    img_left, img_right = segment_lungs(img)
    hulls = [_hull_mask(m) for m in (img_left, img_right)]
    # Expected fields: own hull joined with the mirrored hull of the other side.
    expected = [hulls[0] | hulls[1][:, ::-1], hulls[1] | hulls[0][:, ::-1]]
    heart = segment_heart(img, img_left, img_right, expected)
    extents, opaque = [], []
    lungs = (img_left, img_right)
    for i, (lung, field) in enumerate(zip(lungs, expected, strict=True)):
        # The heart shadow overlaps the medial lung fields; it is not an opacity.
        op = field & ~lung & ~ndi.binary_dilation(heart, iterations=max(1, h // 64))
        # Where the mirrored other lung is aerated but this one is not (catches opacities
        # that merge with the heart shadow; a symmetric heart notch cancels out).
        op |= field & ~lung & lungs[1 - i][:, ::-1]
        op = ndi.binary_opening(op, iterations=max(1, h // 64))
        extents.append(float(op.sum() / max(field.sum(), 1)))
        opaque.append(op)
    affected = [e >= MIN_EXTENT for e in extents]
    # Image left is the patient's right.
    if affected[0] and affected[1]:
        side = "bilateral"
    elif affected[0]:
        side = "right"
    elif affected[1]:
        side = "left"
    else:
        side = "none"
    zone = "none"
    extent = 0.0
    if side != "none":
        sel = [i for i in (0, 1) if affected[i]]
        extent = float(np.mean([extents[i] for i in sel]))
        ys = np.concatenate([np.nonzero(opaque[i])[0] for i in sel])
        fy = np.concatenate([np.nonzero(expected[i])[0] for i in sel])
        top, bottom = fy.min(), fy.max()
        rel = (np.median(ys) - top) / max(bottom - top, 1)
        zone = "upper" if rel < 1 / 3 else "middle" if rel < 2 / 3 else "lower"
    # Cardiothoracic ratio: widest heart shadow over the widest outer distance of the lung fields.
    heart_w, thorax_w = 0.0, 0.0
    cols_l, cols_r = np.nonzero(expected[0].any(0))[0], np.nonzero(expected[1].any(0))[0]
    if len(cols_l) and len(cols_r):
        thorax_w = float(cols_r.max() - cols_l.min() + 1)
    if heart.any():
        heart_w = float(max(np.ptp(np.nonzero(r)[0]) + 1 for r in heart if r.any()))
    ctr = heart_w / thorax_w if thorax_w > 0 else 0.0
    return {
        "side": side,
        "zone": zone,
        "opacity_extent": round(extent, 4),
        "ctr": round(ctr, 4),
        "heart_width_px": round(heart_w, 2),
        "thorax_width_px": round(thorax_w, 2),
    }
