"""The 3D prostate phantom: determinism, NIfTI layout and geometry, ground truth where the
labels say, class differences, reports, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.demo import prostate
from medsynth.data.demo.common import DemoConfig, write_demo
from medsynth.errors import MedsynthError

runner = CliRunner()
SIZE = 32


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "medsynth.json"}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("demo") / "prostate"
    return write_demo(DemoConfig("prostate", str(out), n_per_class=4, size=SIZE, seed=3))


@pytest.fixture(scope="module")
def rendered() -> list[tuple[str, np.ndarray, dict]]:  # type: ignore[type-arg]
    return [(cls, *prostate.render(cls, i, SIZE, 11)) for cls in prostate.CLASSES for i in range(5)]


def test_same_seed_identical_whatever_the_workers(tmp_path: Path, small_set) -> None:  # type: ignore[no-untyped-def]
    b = write_demo(DemoConfig("prostate", str(tmp_path / "b"), n_per_class=4, size=SIZE, seed=3,
                              workers=2))
    fa, fb = _files(small_set.root), _files(b.root)
    assert len(fa) == 3 * 4 + 2  # volumes + labels.csv + datalist.json
    assert fa == fb
    c = write_demo(DemoConfig("prostate", str(tmp_path / "c"), n_per_class=1, size=SIZE, seed=4))
    assert _files(c.root)["labels.csv"] != fa["labels.csv"]
    arr, row = prostate.render("pirads_3", 2, SIZE, 3)  # one volume alone, from its seed
    t = small_set.table.set_index("image_id")
    assert np.array_equal(arr, small_set.load(t.index.get_loc("prostate_pirads_3_00002")).array)
    assert row["zone"] == t.loc["prostate_pirads_3_00002", "zone"]


def test_dataset_is_3d_nifti_with_ras_geometry(small_set) -> None:  # type: ignore[no-untyped-def]
    import nibabel as nib

    out = small_set.manifest.outputs
    assert out["phantom"] is True and out["demo"] == "prostate"
    assert out["spatial_dims"] == 3 and out["modality"] == "MR" and out["dtype"] == "uint16"
    assert out["spacing"] == [2.0, 2.0, 2.0] and out["mm_per_px"] == 2.0
    assert set(small_set.table["path"].str[-7:]) == {".nii.gz"}
    img = nib.load(str(small_set.path_of(0)))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.shape == (SIZE,) * 3 and img.get_data_dtype() == np.uint16
    np.testing.assert_allclose(img.header.get_zooms(), (2.0, 2.0, 2.0))
    np.testing.assert_allclose(img.affine @ ([(SIZE - 1) / 2] * 3 + [1]), [0, 0, 0, 1], atol=1e-9)
    loaded = small_set.load(0)
    assert loaded.array.shape == (1, SIZE, SIZE, SIZE) and loaded.spacing == (2.0, 2.0, 2.0)
    t = small_set.table
    assert (t["report"].str.len() > 40).all()
    assert t.groupby("class").size().to_dict() == {c: 4 for c in prostate.CLASSES}


def test_ground_truth_is_consistent(rendered) -> None:  # type: ignore[no-untyped-def]
    for cls, _arr, row in rendered:
        if cls == "no_lesion":
            assert row["zone"] == "none" and row["diameter_mm"] == 0 and row["pirads"] in (1, 2)
            assert "no focal lesion" in row["report"].lower() or "without a focal" in row["report"]
            continue
        assert row["zone"] in ("peripheral", "transition")
        assert row["side"] in ("left", "right") and row["level"] in ("base", "mid", "apex")
        assert row["margin"] in ("circumscribed", "ill_defined")
        assert 3 <= row["diameter_mm"] <= 34
        big = row["diameter_mm"] >= 15 or row["extraprostatic_extension"] == "yes"
        assert row["pirads"] == (3 if cls == "pirads_3" else 5 if big else 4)
        # the side is the patient's: RAS x > 0 is the patient's right
        assert (row["center_x_mm"] > 0) == (row["side"] == "right") or abs(row["center_x_mm"]) < 3
        report = row["report"]
        assert f"{row['side']} {row['zone']} zone" in report and f"PI-RADS {row['pirads']}" in report


def _sphere_mean(arr: np.ndarray, centre_mm: tuple[float, float, float], r_mm: float) -> float:
    c = prostate._coords(arr.shape[-1])
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    m = (x - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (z - centre_mm[2]) ** 2 <= r_mm ** 2
    return float(arr[0][m].mean())


def test_lesion_is_dark_where_the_labels_say(rendered) -> None:  # type: ignore[no-untyped-def]
    """The lesion's centre is darker than the mirror point in the other half of the gland."""
    darker = []
    for cls, arr, row in rendered:
        if cls == "no_lesion":
            continue
        c = (row["center_x_mm"], row["center_y_mm"], row["center_z_mm"])
        mirror = (-c[0], c[1], c[2])
        r = max(1.5, min(3.0, row["diameter_mm"] / 4))
        darker.append(_sphere_mean(arr, c, r) < 0.9 * _sphere_mean(arr, mirror, r))
    assert np.mean(darker) >= 0.8


def test_classes_differ_in_the_expected_direction() -> None:
    rows = []
    for cls in prostate.CLASSES[1:]:
        for i in range(40):
            rng = prostate.image_rng(0, prostate.CLASSES.index(cls), i)
            a = prostate.sample_attributes(cls, rng)["lesion"]
            rows.append({"cls": cls, "d": a["diameter"], "h": a["h"],
                         "circ": a["margin"] == "circumscribed"})
    t = pd.DataFrame(rows).groupby("cls").mean()
    assert t.loc["pirads_4_5", "d"] > t.loc["pirads_3", "d"] + 3
    assert t.loc["pirads_4_5", "h"] > t.loc["pirads_3", "h"] + 0.1
    assert t.loc["pirads_4_5", "circ"] > 0.6 > 0.4 > t.loc["pirads_3", "circ"]


def test_cli_and_bad_options(tmp_path: Path) -> None:
    r = runner.invoke(app, ["data", "demo", "prostate", "--out", str(tmp_path / "p"),
                            "--n-per-class", "1", "--size", "24"])
    assert r.exit_code == 0, r.output
    assert "3 prostate PHANTOM volumes" in " ".join(r.output.split())
    r = runner.invoke(app, ["data", "info", str(tmp_path / "p")])
    assert r.exit_code == 0 and "PHANTOM" in r.output
    with pytest.raises(MedsynthError, match="between 16 and 192"):
        DemoConfig("prostate", str(tmp_path / "q"), size=256)
