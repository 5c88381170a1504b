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

from medsynth.measure.common import fill_holes, hull_mask, otsu, row_spans

CXR_COLUMNS = ("side", "zone", "opacity_extent", "ctr", "heart_width_px", "thorax_width_px")
"""The keys :func:`measure_cxr` returns (the demo ``labels.csv`` attribute columns)."""
PATCH_DELTA = 0.11
"""Normalised brightness above the lung's own trend that marks patchy consolidation."""
MIN_EXTENT = 0.10
"""A side counts as affected when at least this share of its expected lung field is opaque."""


def _normalize(array: np.ndarray) -> np.ndarray:
    a = array.astype(np.float64)
    if a.ndim == 3:
        a = a.mean(axis=0)
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)


def segment_lungs(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dark lung masks on the image's left and right halves (either may be empty)."""
    h, w = img.shape
    sm = ndi.gaussian_filter(img, max(h / 128, 0.7))
    # Threshold between lung and soft tissue, computed inside the body only.
    body = sm > otsu(sm.ravel()) * 0.5
    body = fill_holes(ndi.binary_closing(body, iterations=2))
    vals = sm[body] if body.sum() > 0.1 * h * w else sm.ravel()
    dark = (sm < otsu(vals)) & body
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
        # Holes are kept: an opacity inside an aerated lung is a hole in its dark mask.
        halves.append(best if best_area > 0.002 * h * w else np.zeros_like(dark))
    return halves[0], halves[1]


def _robust_trend(sm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Quadratic intensity trend of ``mask`` pixels, refitted without the brightest 15%;
    shifted so that the median residual inside the mask is 0."""
    h, w = sm.shape
    yy, xx = np.mgrid[0:h, 0:w] / h
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], -1)
    m = mask.copy()
    fit = np.zeros_like(sm)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(basis[m], sm[m], rcond=None)
        fit = basis @ coef
        res = sm - fit
        m = mask & (res < np.percentile(res[mask], 85))
    return fit + float(np.median((sm - fit)[mask]))


def expected_field(lung: np.ndarray, other: np.ndarray, medial_right: bool,
                   hulls: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Where this lung should be aerated: its convex hull without the medial concavity (the
    heart and mediastinum), plus the mirrored other lung's hull in rows this lung has lost
    (basal effusion, apical or whole-row consolidation).

    ``medial_right``: the midline is to the right of this lung (the image-left lung).
    """
    h, w = lung.shape
    hull, other_hull = hulls if hulls is not None else (hull_mask(lung), hull_mask(other))
    has, first, last = row_spans(lung)
    cols = np.arange(w)[None, :]
    if medial_right:
        medial = cols > np.where(has, last, w)[:, None]
    else:
        medial = cols < np.where(has, first, -1)[:, None]
    field = hull & ~medial
    mirrored = other_hull[:, ::-1]
    lost_rows = ~has & mirrored.any(1)
    field[lost_rows] |= mirrored[lost_rows]
    # Rows inside the lung's height where it has no aerated pixel at all.
    if has.any():
        top, bottom = np.nonzero(has)[0][[0, -1]]
        gap = ~has.copy()
        gap[:top] = gap[bottom + 1:] = False
        field[gap] |= mirrored[gap]
    return field


def heart_width(left: np.ndarray, right: np.ndarray) -> float:
    """Widest gap between the medial lung borders down to the diaphragm domes.

    Going down, the gap follows the heart's border and widens smoothly; just below the domes the
    lungs withdraw into the costophrenic recesses and the gap jumps. That jump is searched a
    recess depth (5-16% of the image height) above the lowest lung row; the heart width is the
    gap just before it.
    """
    h = left.shape[0]
    hl, _, ll = row_spans(left)
    hr, fr, _ = row_spans(right)
    rows = np.nonzero(hl & hr)[0]
    if len(rows) < 4:
        return 0.0
    gap = (fr[rows] - ll[rows] - 1).astype(float)
    diff = np.diff(gap)
    window = (rows[1:] >= rows[-1] - 0.16 * h) & (rows[1:] <= rows[-1] - 0.05 * h)
    if not window.any():
        return float(gap.max())
    j = int(np.argmax(np.where(window, diff, -np.inf)))
    return float(gap[: j + 1].max())


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
    lungs = segment_lungs(img)  # image left (patient right), image right (patient left)
    hulls = (hull_mask(lungs[0]), hull_mask(lungs[1]))
    fields = [expected_field(lungs[0], lungs[1], True, hulls),
              expected_field(lungs[1], lungs[0], False, hulls[::-1])]
    sm = ndi.gaussian_filter(img, h / 48)
    extents, opaque = [], []
    for lung, field in zip(lungs, fields, strict=True):
        # Lost aerated area (effusion, whole-row consolidation) ...
        op = ndi.binary_opening(field & ~lung, iterations=max(1, h // 64))
        # ... and patchy consolidation that is still darker than soft tissue: brighter than
        # the lung's own smooth intensity trend (denser bases, lateral chest wall).
        filled = fill_holes(lung)
        core = ndi.binary_erosion(filled, iterations=max(1, h // 24))
        if core.sum() > 30:
            res = sm - _robust_trend(sm, core)
            hot = core & (res > PATCH_DELTA)
            hot = ndi.binary_dilation(hot, iterations=max(1, h // 24)) & filled
            op |= ndi.binary_opening(hot, iterations=max(1, h // 64))
        extents.append(float(op.sum() / max((op | filled).sum(), 1)))
        opaque.append(op)
    affected = [e >= MIN_EXTENT for e in extents]
    # Image left is the patient's right.
    side = {(True, True): "bilateral", (True, False): "right", (False, True): "left",
            (False, False): "none"}[(affected[0], affected[1])]
    zone, extent = "none", 0.0
    if side != "none":
        sel = [i for i in (0, 1) if affected[i]]
        extent = float(np.mean([extents[i] for i in sel]))
        ys = np.concatenate([np.nonzero(opaque[i])[0] for i in sel])
        fy = np.concatenate([np.nonzero(fields[i] | lungs[i])[0] for i in sel])
        top, bottom = fy.min(), fy.max()
        rel = (np.median(ys) - top) / max(bottom - top, 1)
        zone = "upper" if rel < 1 / 3 else "middle" if rel < 2 / 3 else "lower"
    thorax_w = 0.0
    if lungs[0].any() and lungs[1].any():
        thorax_w = float(np.nonzero((fields[1] | lungs[1]).any(0))[0].max()
                         - np.nonzero((fields[0] | lungs[0]).any(0))[0].min() + 1)
    heart_w = heart_width(*lungs)
    ctr = heart_w / thorax_w if thorax_w > 0 else 0.0
    return {
        "side": side,
        "zone": zone,
        "opacity_extent": round(extent, 4),
        "ctr": round(ctr, 4),
        "heart_width_px": round(heart_w, 2),
        "thorax_width_px": round(thorax_w, 2),
    }
