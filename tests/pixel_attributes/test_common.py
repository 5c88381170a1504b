"""The shared geometry helpers agree with their scipy/numpy definitions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from medsynth.pixel_attributes.common import fill_holes, hull_mask, otsu, row_spans


def test_fill_holes_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = ndi.gaussian_filter(rng.random((40, 48)), 2) > 0.5
        assert np.array_equal(fill_holes(m), ndi.binary_fill_holes(m))


def test_hull_of_a_triangle_and_row_spans() -> None:
    m = np.zeros((21, 21), bool)
    m[2, 2] = m[2, 18] = m[18, 10] = True
    hull = hull_mask(m)
    assert hull[10, 10] and not hull[18, 2] and not hull[17, 17]
    # Pixels inside or on a lattice polygon: area + perimeter / 2 + 1 (Pick's theorem).
    perimeter = 16 + 2 * np.hypot(8, 16)
    expected = 0.5 * 16 * 16 + perimeter / 2 + 1
    assert abs(hull.sum() - expected) < 0.1 * expected
    has, first, last = row_spans(hull)
    assert has[2] and first[2] == 2 and last[2] == 18 and not has[0] and first[0] == -1


def test_otsu_splits_two_modes() -> None:
    x = np.concatenate([np.full(100, 0.2), np.full(100, 0.8)])
    assert 0.2 < otsu(x) < 0.8
