"""measure_cxr on synthetic chest phantoms of known side, zone and heart size."""

from __future__ import annotations

import pytest

from medsynth.pixel_attributes import CXR_COLUMNS, measure_cxr
from tests.pixel_attributes.shapes import chest


@pytest.mark.parametrize("size", [64, 128])
def test_normal_chest(size: int) -> None:
    m = measure_cxr(chest(size))
    assert set(m) == set(CXR_COLUMNS)
    assert m["side"] == "none" and m["zone"] == "none" and m["opacity_extent"] == 0.0
    assert 0.3 < m["ctr"] < 0.5


def test_cardiomegaly_ctr() -> None:
    small, big = measure_cxr(chest(128, heart_frac=0.4)), measure_cxr(chest(128, heart_frac=0.58))
    assert big["ctr"] > 0.5 > small["ctr"]
    assert big["heart_width_px"] > small["heart_width_px"]


@pytest.mark.parametrize("side", ["left", "right", "bilateral"])
@pytest.mark.parametrize("zone", ["upper", "lower"])
def test_opacity_side_and_zone(side: str, zone: str) -> None:
    """Radiological convention: the patient's left lung is on the image's right."""
    if (side, zone) == ("bilateral", "lower"):
        pytest.xfail("known limit: symmetric basal opacities touching the heart read as heart")
    m = measure_cxr(chest(128, opacity=side, zone=zone))
    assert m["side"] == side
    assert m["zone"] == zone
    assert 0.05 < m["opacity_extent"] < 0.6


def test_effusion_is_lower_zone() -> None:
    m = measure_cxr(chest(128, effusion="left"))
    assert m["side"] == "left" and m["zone"] == "lower"


def test_small_films_are_measured_upsampled() -> None:
    """32 px films (the CPU recipes' size) are measured at 128 px: the cardiothoracic ratio of
    normal phantoms stays within a few points of the 128 px one, cardiomegaly still reads larger
    than normal, and pixel widths come back in the input's pixels."""
    from medsynth.pixel_attributes import measure_cxr
    from tests.judge.conftest import phantom

    ctr: dict[str, list[float]] = {"normal": [], "cardiomegaly": []}
    for cls in ctr:
        for i in range(6):
            small, big = (measure_cxr(phantom("cxr", cls, i, s)[0]) for s in (32, 128))
            ctr[cls].append(small["ctr"])
            assert abs(small["thorax_width_px"] * 4 - big["thorax_width_px"]) <= 8, (small, big)
            if cls == "normal":
                assert abs(small["ctr"] - big["ctr"]) < 0.06, (small, big)
    assert sum(ctr["cardiomegaly"]) / 6 > sum(ctr["normal"]) / 6 + 0.02, ctr
