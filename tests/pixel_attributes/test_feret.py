"""The one Feret diameter (derm and prostate measurers, the prostate phantom)."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.pixel_attributes.common import feret_diameter, mask_diameter


def _brute(pts: np.ndarray) -> float:
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


@pytest.mark.parametrize("dims", [2, 3])
def test_hull_gives_the_all_pairs_maximum(dims: int) -> None:
    pts = np.random.default_rng(dims).normal(size=(200, dims))
    assert feret_diameter(pts) == pytest.approx(_brute(pts), rel=1e-12)


def test_degenerate_point_sets() -> None:
    line = np.stack([np.arange(10.0), 2 * np.arange(10.0)], 1)  # collinear: no hull
    assert feret_diameter(line) == pytest.approx(np.hypot(9, 18))
    assert feret_diameter(line[:3]) == pytest.approx(np.hypot(2, 4))
    assert feret_diameter(line[:1]) == 0.0


def test_mask_diameter_adds_one_voxel() -> None:
    mask = np.zeros((4, 5, 6), bool)
    mask[1, 1, 1:4] = True  # three voxels in a row, 0.5 mm apart
    z, y, x = np.meshgrid(*(np.arange(n) * 0.5 for n in mask.shape), indexing="ij")
    assert mask_diameter(mask, (x, y, z), 0.5) == pytest.approx(1.5)
    assert mask_diameter(np.zeros_like(mask), (x, y, z), 0.5) == 0.0
