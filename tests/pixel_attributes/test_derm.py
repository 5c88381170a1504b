"""measure_derm on synthetic lesions of known geometry and colour."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.pixel_attributes import DERM_COLUMNS, measure_derm
from tests.pixel_attributes.shapes import lesion


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("semi", [0.15, 0.3])
def test_diameter_of_ellipse(size: int, semi: float) -> None:
    a, b = semi * size, semi * size * 0.6
    m = measure_derm(lesion(size, a, b), 20 / size)
    assert set(m) == set(DERM_COLUMNS)
    assert m["diameter_mm"] == pytest.approx(2 * a * 20 / size, rel=0.08)
    assert m["center_x"] == pytest.approx((size - 1) / 2, abs=1.0)


def test_smooth_vs_ragged_border() -> None:
    smooth = measure_derm(lesion(96, 28, 20), 20 / 96)
    ragged = measure_derm(lesion(96, 28, 20, wobble=0.18), 20 / 96)
    assert smooth["border"] == "regular" and smooth["border_irregularity"] < 0.3
    assert ragged["border"] == "irregular" and ragged["border_irregularity"] > 0.6


def test_asymmetry_counts_axes() -> None:
    sym = measure_derm(lesion(96, 28, 18, angle=0.0), 20 / 96)
    bulged = measure_derm(lesion(96, 22, 16, angle=0.0, lobe=0.5), 20 / 96)
    assert sym["asymmetry"] == 0
    assert bulged["asymmetry"] >= 1


def test_colours_from_the_vocabulary() -> None:
    one = measure_derm(lesion(96, 28, 20, color=(98, 58, 34)), 20 / 96)
    two = measure_derm(lesion(96, 28, 20, color=(98, 58, 34), second=(104, 116, 138)), 20 / 96)
    assert one["colors"] == "dark_brown" and one["n_colors"] == 1
    assert two["colors"] == "dark_brown;blue_grey" and two["n_colors"] == 2


def test_hairs_do_not_change_the_lesion() -> None:
    clean = measure_derm(lesion(128, 36, 26), 20 / 128)
    hairy = measure_derm(lesion(128, 36, 26, hairs=4, seed=3), 20 / 128)
    assert hairy["hair"] >= 1 and clean["hair"] == 0
    assert hairy["diameter_mm"] == pytest.approx(clean["diameter_mm"], rel=0.1)


def test_skin_tone_orders_with_lightness() -> None:
    tones = [measure_derm(lesion(64, 18, 14, skin=s, color=(60, 35, 20)), 20 / 64)["skin_tone"]
             for s in [(240, 214, 190), (200, 150, 110), (120, 80, 55)]]
    assert tones == sorted(tones) and tones[0] < tones[-1]


def test_rejects_grayscale() -> None:
    with pytest.raises(ValueError):
        measure_derm(np.zeros((1, 32, 32), np.uint8), 0.3)


def _honeycomb(arr: np.ndarray, period: float = 5.0, gain: float = 0.5) -> np.ndarray:
    """``arr`` with lighter holes on a hexagonal lattice inside the lesion (brown pixels)."""
    from scipy import ndimage as ndi

    img = arr.astype(float)
    inside = ndi.binary_erosion(img[0] < 200, iterations=1)  # the lesion, not the skin
    yy, xx = np.mgrid[0:arr.shape[1], 0:arr.shape[2]].astype(float)
    row = np.round(yy / (period * 0.866))
    shift = (row % 2) * period / 2
    dy = yy - row * period * 0.866
    dx = (xx - shift) - np.round((xx - shift) / period) * period
    hole = ndi.gaussian_filter((np.hypot(dx, dy) < 0.32 * period).astype(float), 0.6)
    img = img * (1 + gain * hole * inside)[None]
    return np.clip(img / np.maximum(img.max(axis=0, keepdims=True) / 255, 1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [64, 128])
def test_pigment_network_is_a_mesh_of_lighter_holes(size: int) -> None:
    plain = lesion(size, 0.3 * size, 0.22 * size, color=(176, 116, 72))
    m_plain = measure_derm(plain, 20 / size)
    m_net = measure_derm(_honeycomb(plain), 20 / size)
    assert "pigment_network" not in m_plain["structures"]
    assert "pigment_network" in m_net["structures"]
    # The mesh does not add colours or dots.
    assert m_net["colors"] == m_plain["colors"] == "light_brown"
    assert "dots_globules" not in m_net["structures"]


def test_lesion_view_on_skin_patches_lesions_and_cut_lesions() -> None:
    """Skin texture (a phantom's skin, no lesion) is 'none', not a tiny lesion; a lesion in full
    view is 'whole'; one running off the image edge is 'partial'."""
    from medsynth.pixel_attributes.derm import LESION_VIEWS, lesion_view
    from tests.pixel_attributes.patches import MM_PER_PX, skin_patches, whole_lesions

    for patch in skin_patches(6):
        assert measure_derm(patch, MM_PER_PX, with_view=True)["lesion"] == "none"
    for crop in whole_lesions(2):
        m = measure_derm(crop, MM_PER_PX, with_view=True)
        assert m["lesion"] == "whole" and m["diameter_mm"] > 1.5
        assert set(measure_derm(crop, MM_PER_PX)) == set(DERM_COLUMNS)  # no view unless asked
    # A lesion running off the edge, or filling the view: never described as a whole lesion
    # (the skin model of the border ring cannot be fitted; a faint remnant is not a lesion).
    for a, b, centre in ((30, 20, (4.0, 47.5)), (47, 30, None), (60, 25, None)):
        m = measure_derm(lesion(96, a, b, angle=0.0, center=centre), 20 / 96, with_view=True)
        assert m["lesion"] in LESION_VIEWS and m["lesion"] != "whole"
    base = {"center": (30.0, 30.0), "diameter_px": 30.0, "fill": 0.6, "contrast": 9.0}
    assert lesion_view({**base, "edge_px": 0}, 0.1) == "whole"
    assert lesion_view({**base, "edge_px": 4}, 0.1) == "partial"
    assert lesion_view({**base, "edge_px": 0, "fill": 0.15}, 0.1) == "none"  # a hair
    assert lesion_view({**base, "edge_px": 0, "contrast": 2.0}, 0.1) == "none"  # texture
    assert lesion_view({**base, "edge_px": 0}, 0.04) == "none"  # 1.2 mm: a speck
    plain = measure_derm(np.full((3, 64, 64), 200, np.uint8), 20 / 64, with_view=True)
    assert plain["lesion"] == "none" and plain["diameter_mm"] == 0.0
