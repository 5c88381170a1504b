"""Chest radiograph attributes measured from the pixels (PA view, radiological convention).

Radiological convention: the patient's left is on the image's right. Intensities follow
MONOCHROME2 (air dark, bone and fluid bright), any bit depth.

1. Lungs: the dark regions inside the body (Otsu on the smoothed image, components that do not
   touch the image border), one per image half.
2. Expected lung fields: each lung's convex hull joined with the mirrored hull of the other lung,
   so a lung that lost area to an opacity or effusion is compared with its healthy shape.
3. Opacity, per side: (a) the part of the expected lung field that is not dark lung, (b) patches
   inside the lung field brighter than the aerated lung's own smooth trend (consolidation), and
   (c) below the lung's lower border, fluid: pixels darker than the abdomen that continue
   further than the diaphragm's edge would (an effusion hides the diaphragm and the
   costophrenic angle). Extent = opaque share of the side's lung field (aerated + opaque); side
   and zone (upper/middle/lower third of the lung height) of the opaque pixels.
4. Cardiothoracic ratio: the widest gap between the medial lung borders above the costophrenic
   recesses (the heart shadow, less the blur of its borders) over the widest outer distance
   between the lungs (the thorax).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medsynth.pixel_attributes.common import fill_holes, hull_mask, otsu, row_spans

CXR_COLUMNS = ("side", "zone", "opacity_extent", "ctr", "heart_width_px", "thorax_width_px")
"""The keys :func:`measure_cxr` returns (the demo ``labels.csv`` attribute columns)."""
PATCH_DELTA = 0.12
"""Normalised brightness above the lung's own trend that marks patchy consolidation."""
FLUID_MARGIN = 0.05
"""Fluid below a lung is at least this much darker (normalised) than the abdomen."""
DIAPHRAGM_EDGE = 0.04
"""Height (share of the image) of the diaphragm's blurred edge below a healthy lung; fluid must
continue at least twice as far."""
MIN_EXTENT = 0.08
"""A side counts as affected when at least this share of its lung field is opaque."""
RECESS_STEP = 3.0
"""Row-to-row widening (px at 128 px) of the gap between the lungs where they withdraw into
the costophrenic recesses, below the heart."""
HEART_EDGE = 3 / 128
"""Share of the image width by which the gap between the dark lung masks exceeds the heart's
width (both borders blurred)."""


MIN_SIDE = 128
"""Films smaller than this (pixels, shorter side) are measured upsampled to it."""


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


@functools.lru_cache(maxsize=8)
def _quad_basis(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / h
    return np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], -1)


def _robust_trend(sm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Quadratic intensity trend of ``mask`` pixels, refitted without the brightest 15%;
    shifted so that the median residual inside the mask is 0.

    Normal equations on every other pixel (a 6x6 solve): no threaded least-squares call per
    image, which stalls on a busy machine.
    """
    h, w = sm.shape
    basis = _quad_basis(h, w)
    sub = np.zeros((h, w), bool)
    sub[::2, ::2] = True
    m = mask & sub if (mask & sub).sum() >= 12 else mask.copy()
    fit = np.zeros_like(sm)
    for _ in range(3):
        a = basis[m]
        coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(6), a.T @ sm[m])
        fit = basis @ coef
        res = sm - fit
        keep = res < np.percentile(res[m], 85)
        if (m & keep).sum() < 12:
            break
        m = m & keep
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
    """Widest gap between the medial lung borders down to the diaphragm domes, less the blur.

    Going down, the gap follows the heart's border and widens smoothly (a pixel or two per row);
    just below the domes the lungs withdraw into the costophrenic recesses and the gap jumps.
    The first such jump (``RECESS_STEP`` px per row at 128 px) is searched a recess depth (3-16 %
    of the image height) above the lowest lung row; the heart width is the widest gap above it.
    The dark lung masks stop short of the heart's blurred border on both sides: ``HEART_EDGE``
    of the width is taken off.
    """
    h = left.shape[0]
    hl, _, ll = row_spans(left)
    hr, fr, _ = row_spans(right)
    rows = np.nonzero(hl & hr)[0]
    if len(rows) < 4:
        return 0.0
    gap = (fr[rows] - ll[rows] - 1).astype(float)
    diff = np.diff(gap)
    window = (rows[1:] >= rows[-1] - 0.16 * h) & (rows[1:] <= rows[-1] - 0.03 * h)
    if not window.any():
        return max(float(gap.max()) - HEART_EDGE * h, 0.0)
    jumps = window & (diff >= RECESS_STEP * h / 128)
    j = int(np.argmax(jumps)) if jumps.any() else int(np.argmax(np.where(window, diff, -np.inf)))
    return max(float(gap[: j + 1].max()) - HEART_EDGE * h, 0.0)


def opacity(img: np.ndarray, sm: np.ndarray, lung: np.ndarray,
            field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Opaque pixels of one side and the side's lung field (aerated + opaque).

    ``img`` the normalised image, ``sm`` it smoothed, ``lung`` the side's dark lung mask and
    ``field`` its expected lung field (:func:`expected_field`).
    """
    h, w = img.shape
    region = field | fill_holes(lung)
    op = np.zeros((h, w), bool)
    if lung.sum() < 10:
        return op, region
    # (a) lost aerated area: the expected field where the lung is not dark.
    op |= ndi.binary_opening(field & ~lung, iterations=max(1, h // 64))
    # (b) consolidation: brighter than the aerated lung's trend. The smoothing stays inside the
    # lung field (normalised convolution), so the bright surroundings do not lift its rim.
    sig = max(h / 85, 0.7)
    weight = ndi.gaussian_filter(region.astype(float), sig)
    inside = ndi.gaussian_filter(np.where(region, img, 0.0), sig) / np.maximum(weight, 1e-6)
    fit_on = ndi.binary_erosion(lung, iterations=max(1, h // 64))
    if fit_on.sum() < 30:
        fit_on = lung
    patch = region & (inside - _robust_trend(inside, fit_on) > PATCH_DELTA)
    lab, n = ndi.label(patch)
    if n:
        sizes = ndi.sum(patch, lab, np.arange(1, n + 1))
        patch = np.isin(lab, 1 + np.nonzero(sizes >= max(2, 6 * (h / 128) ** 2))[0])
    op |= patch
    # (c) fluid below the lung: columns where, under the field's lower border, the image stays
    # darker than the abdomen for longer than the diaphragm's blurred edge.
    cols = np.nonzero(region.any(0))[0]
    abdomen = float(np.median(sm[int(0.92 * h):, cols.min():cols.max() + 1]))
    has = region.any(0)
    bottom = np.where(has, h - 1 - np.argmax(region[::-1], axis=0), h)
    rows = np.arange(h)[:, None]
    below = (rows > bottom[None, :]) & has[None, :]
    stop = below & (sm >= abdomen - FLUID_MARGIN)
    first = np.where(stop.any(0), np.argmax(stop, axis=0), h)
    run = below & (rows < first[None, :]) & (rows < bottom[None, :] + 0.35 * h)
    run &= (run.sum(0) >= 2 * DIAPHRAGM_EDGE * h)[None, :]
    return op | run, region | run


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
    # The lung and heart outlines need pixels: below MIN_SIDE the heart's borders merge with
    # the mediastinum (32 px phantoms read as CTR 0), so small films are measured upsampled
    # and the pixel widths reported in the input's pixels.
    scale = max(1.0, MIN_SIDE / min(img.shape))
    if scale > 1.0:
        img = np.clip(ndi.zoom(img, scale, order=1), 0, 1)
    h, w = img.shape
    lungs = segment_lungs(img)  # image left (patient right), image right (patient left)
    hulls = (hull_mask(lungs[0]), hull_mask(lungs[1]))
    fields = [expected_field(lungs[0], lungs[1], True, hulls),
              expected_field(lungs[1], lungs[0], False, hulls[::-1])]
    # The abdomen below the lungs: the brightest large structure, the reference for fluid.
    sm = ndi.gaussian_filter(img, max(h / 85, 0.7))
    extents, opaque, regions = [], [], []
    for lung, field in zip(lungs, fields, strict=True):
        op, region = opacity(img, sm, lung, field)
        extents.append(float(op.sum() / max(region.sum(), 1)))
        opaque.append(op)
        regions.append(region)
    affected = [e >= MIN_EXTENT for e in extents]
    # Image left is the patient's right.
    side = {(True, True): "bilateral", (True, False): "right", (False, True): "left",
            (False, False): "none"}[(affected[0], affected[1])]
    zone, extent = "none", 0.0
    if side != "none":
        sel = [i for i in (0, 1) if affected[i]]
        # Pooled over the affected sides: the opaque share of their lung fields together.
        extent = float(sum(opaque[i].sum() for i in sel) / max(sum(regions[i].sum() for i in sel), 1))
        ys = np.concatenate([np.nonzero(opaque[i])[0] for i in sel])
        fy = np.concatenate([np.nonzero(regions[i])[0] for i in sel])
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
        "heart_width_px": round(heart_w / scale, 2),
        "thorax_width_px": round(thorax_w / scale, 2),
    }
