"""Small geometry and thresholding helpers shared by the measurements (and the demo phantoms' own
Feret diameters)."""

from __future__ import annotations

import numpy as np


def otsu(values: np.ndarray, bins: int = 128) -> float:
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


def feret_diameter(pts: np.ndarray) -> float:
    """Largest distance between two of ``pts`` (N x 2 or N x 3), over their convex hull."""
    if len(pts) < 2:
        return 0.0
    if len(pts) > 4:
        from scipy.spatial import ConvexHull, QhullError

        try:
            pts = pts[ConvexHull(pts).vertices]
        except (QhullError, ValueError):  # degenerate (collinear or flat): all points
            pass
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def mask_diameter(mask: np.ndarray, coords: tuple[np.ndarray, ...], voxel: float) -> float:
    """Largest diameter of a voxel mask: the widest pair of voxel centres (``coords``: one
    coordinate array per axis, broadcastable to the mask) plus one voxel; 0 when empty."""
    if not mask.any():
        return 0.0
    pts = np.stack([np.broadcast_to(c, mask.shape)[mask] for c in coords], 1).astype(np.float64)
    return feret_diameter(pts) + voxel


def row_spans(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: has pixels, first column, last column (-1 where empty)."""
    has = mask.any(1)
    first = np.where(has, mask.argmax(1), -1)
    last = np.where(has, mask.shape[1] - 1 - mask[:, ::-1].argmax(1), -1)
    return has, first, last


def hull_mask(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a binary mask (half-plane tests inside the bounding box)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return mask.copy()
    from scipy.spatial import ConvexHull

    # The hull of the pixels' row end points equals the hull of all pixels, with far fewer points.
    has, first, last = row_spans(mask)
    rows = np.nonzero(has)[0]
    pts = np.concatenate([np.stack([first[rows], rows], 1), np.stack([last[rows], rows], 1)])
    pts = pts.astype(float)
    try:
        hull = pts[ConvexHull(pts).vertices]  # counter-clockwise in (x, y)
    except Exception:
        return mask.copy()
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    inside = np.ones(yy.shape, bool)
    nxt = np.roll(hull, -1, axis=0)
    for (ax, ay), (bx, by) in zip(hull, nxt, strict=True):
        # Left of (or on, within half a pixel) every edge of a counter-clockwise polygon.
        cross = (bx - ax) * (yy - ay) - (by - ay) * (xx - ax)
        inside &= cross >= -0.5 * np.hypot(bx - ax, by - ay)
    out = mask.copy()
    out[y0:y1, x0:x1] |= inside
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` by labelling the background once (same result for
    4-connected holes, and much faster than the iterative reconstruction on small images)."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(~mask)
    if n == 0:
        return mask.copy()
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    outside = np.isin(lab, border[border > 0])
    return ~outside
