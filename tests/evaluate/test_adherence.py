"""Attribute adherence on the derm demo phantoms (real ground truth, real measurements)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsynth.evaluate.adherence import adherence_report, compare, kind_of, parse_text
from medsynth.evaluate.inputs import open_synthetic
from medsynth.imaging.dataset import open_dataset

from .conftest import make_model, make_synthetic


@pytest.fixture(scope="module")
def derm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    common = pytest.importorskip("medsynth.data.demo.common")
    base = tmp_path_factory.mktemp("adherence")
    data = base / "derm"
    common.write_demo(common.DemoConfig(demo="derm", out=str(data), n_per_class=14, size=32,
                                        workers=1))
    model = make_model(base / "model", data)
    faithful = make_synthetic(base / "faithful", data, model, mode="copies", n_per_class=8)
    # Same images, but each claims the description of another image of its class.
    mismatched = make_synthetic(base / "mismatched", data, model, mode="copies", n_per_class=8)
    csv = mismatched / "samples.csv"
    t = pd.read_csv(csv, keep_default_na=False, dtype=str)
    t["description_source"] = t.groupby("class")["description_source"].transform(
        lambda s: np.roll(s.to_numpy(), 3))
    t.to_csv(csv, index=False)
    return {"data": data, "faithful": faithful, "mismatched": mismatched}


def test_faithful_images_adhere_better_than_mismatched(derm: dict[str, Path]) -> None:
    ds = open_dataset(derm["data"])
    assert kind_of(ds.attribute_columns) == "derm"
    rep = adherence_report(ds, [open_synthetic(derm["faithful"]),
                                open_synthetic(derm["mismatched"])])
    assert rep["applies"] and rep["kind"] == "derm"
    good, bad = rep["sets"]["faithful"], rep["sets"]["mismatched"]
    assert good["n"] == bad["n"] == 24
    # An image measured against its own ground truth: the measurement's noise only.
    assert good["synthetic"]["diameter_mm"] < bad["synthetic"]["diameter_mm"]
    assert good["synthetic"]["colors"] > bad["synthetic"]["colors"]
    # The shuffled reference of the faithful set is a mismatch too: worse than faithful.
    assert good["synthetic"]["diameter_mm"] < good["shuffled"]["diameter_mm"]
    assert set(rep["real"]) >= {"diameter_mm", "asymmetry", "border", "colors", "structures"}


def test_not_applicable_without_attributes(shapes: dict[str, Path]) -> None:
    rep = adherence_report(open_dataset(shapes["data"]), [open_synthetic(shapes["synth"])])
    assert rep["applies"] is False and "attribute" in rep["reason"]


def test_compare_and_parse_text() -> None:
    req = {"diameter_mm": 6.0, "colors": "dark_brown;blue_grey", "border": "irregular",
           "asymmetry": 2, "structures": "none"}
    got = {"diameter_mm": 7.5, "colors": "dark_brown", "border": "irregular", "asymmetry": 1,
           "structures": "none"}
    c = compare("derm", req, got)
    assert c == {"diameter_mm": 1.5, "colors": 0.5, "border": 1.0, "asymmetry": 0.0,
                 "structures": 1.0}
    p = parse_text("derm", "A large 8.5 mm lesion, blue-grey and dark brown, irregular border")
    assert p["diameter_mm"] == 8.5 and p["border"] == "irregular"
    assert p["colors"] == "dark_brown;blue_grey" and p["n_colors"] == 2
    assert parse_text("cxr", "right lower zone consolidation") == {"side": "right",
                                                                   "zone": "lower"}
