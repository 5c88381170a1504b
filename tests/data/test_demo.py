"""The built-in demo phantoms: determinism, balance, ground truth, overlap, image statistics, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.demo import cxr, derm
from medsynth.data.demo.common import DemoConfig, image_rng, write_demo
from medsynth.errors import MedsynthError
from medsynth.imaging.dataset import open_dataset
from medsynth.imaging.readers import read_image

runner = CliRunner()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "medsynth.json"}


@pytest.fixture(scope="module")
def derm_set(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("demo") / "derm"
    return write_demo(DemoConfig("derm", str(out), n_per_class=12, size=32, seed=3))


@pytest.fixture(scope="module")
def cxr_set(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("demo") / "cxr"
    return write_demo(DemoConfig("cxr", str(out), n_per_class=6, size=64, seed=5))


# ---------------------------------------------------------------------------------------------
# determinism, balance, manifest


def test_same_seed_gives_identical_files_whatever_the_workers(tmp_path: Path) -> None:
    a = write_demo(DemoConfig("derm", str(tmp_path / "a"), n_per_class=3, size=32, seed=7))
    b = write_demo(DemoConfig("derm", str(tmp_path / "b"), n_per_class=3, size=32, seed=7, workers=2))
    c = write_demo(DemoConfig("derm", str(tmp_path / "c"), n_per_class=3, size=32, seed=8))
    fa, fb, fc = _files(a.root), _files(b.root), _files(c.root)
    assert len(fa) == 3 * 3 + 2  # images + labels.csv + datalist.json
    assert fa == fb
    assert fa.keys() == fc.keys() and fa != fc
    # Any single image can be reproduced alone from its seed.
    arr, row = derm.render("nevus", 2, 32, 7)
    assert np.array_equal(arr, a.load(a.table[a.table.image_id == "derm_nevus_00002"].iloc[0]).array)
    assert row["skin_tone"] == int(a.table.set_index("image_id").loc["derm_nevus_00002", "skin_tone"])


def test_cxr_same_seed_identical(tmp_path: Path) -> None:
    a = write_demo(DemoConfig("cxr", str(tmp_path / "a"), n_per_class=1, size=32, seed=1))
    b = write_demo(DemoConfig("cxr", str(tmp_path / "b"), n_per_class=1, size=32, seed=1))
    assert _files(a.root) == _files(b.root)


def test_derm_dataset_layout_balance_and_manifest(derm_set) -> None:  # type: ignore[no-untyped-def]
    ds = derm_set
    assert ds.classes == list(derm.CLASSES)
    counts = ds.table["class"].value_counts()
    assert set(counts) == {12}
    for cls in derm.CLASSES:
        per = ds.table[ds.table["class"] == cls]["split"].value_counts()
        assert per["test"] == 2 and per["val"] == 1 and per["train"] == 9
    out = ds.manifest.outputs
    assert out["phantom"] is True and out["demo"] == "derm" and out["modality"] == "XC"
    assert out["mm_per_px"] == pytest.approx(20 / 32) and out["seed"] == 3
    assert ds.manifest.config["n_per_class"] == 12
    assert all(p.startswith(f"images/{c}/") for p, c in zip(ds.table.path, ds.table["class"], strict=True))
    img = ds.load(0)
    assert img.array.shape == (3, 32, 32) and img.array.dtype == np.uint8
    for col in ("diameter_mm", "asymmetry", "border_irregularity", "border", "colors", "n_colors",
                "structures", "skin_tone", "hair", "center_x", "center_y"):
        assert col in ds.attribute_columns


# ---------------------------------------------------------------------------------------------
# derm ground truth


def _sampled(n: int = 400) -> pd.DataFrame:
    rows = []
    for ci, cls in enumerate(derm.CLASSES):
        for i in range(n):
            a = derm.sample_attributes(cls, image_rng(0, ci, i))
            rows.append({"class": cls, **a})
    return pd.DataFrame(rows)


def test_derm_attribute_ranges(derm_set) -> None:  # type: ignore[no-untyped-def]
    t = derm_set.table
    assert t.diameter_mm.between(2.5, 16).all()
    assert set(t.asymmetry) <= {0, 1, 2}
    assert t.border_irregularity.between(0, 1).all()
    assert ((t.border_irregularity >= 0.5) == (t.border == "irregular")).all()
    assert t.skin_tone.between(1, 6).all() and (t.hair >= 0).all()
    assert t.center_x.between(0, 31).all() and t.center_y.between(0, 31).all()
    for colors, n, structures in zip(t.colors, t.n_colors, t.structures, strict=True):
        parts = colors.split(";")
        assert parts == [c for c in derm.COLOR_VOCAB if c in parts] and len(parts) == n
        assert {"light_brown", "dark_brown"} & set(parts)
        s = structures.split(";")
        assert structures == "none" or s == [x for x in derm.STRUCTURE_VOCAB if x in s]
        if "blue_white_veil" in s:
            assert {"blue_grey", "white"} <= set(parts)
    # Per-class ranges over many samples (attributes only: cheap).
    df = _sampled(300)
    for cls, (_, _, lo, hi) in ((c, derm.PRIORS[c].diameter) for c in derm.CLASSES):
        d = df[df["class"] == cls].diameter_mm
        assert d.min() >= lo and d.max() <= hi


def test_derm_classes_differ_in_the_expected_direction() -> None:
    df = _sampled(400)
    df["n_colors"] = df.colors.map(len)
    m = df.groupby("class").mean(numeric_only=True)
    assert m.loc["melanoma", "n_colors"] > m.loc["seborrheic_keratosis", "n_colors"] > m.loc["nevus", "n_colors"]
    assert m.loc["melanoma", "diameter_mm"] > m.loc["nevus", "diameter_mm"] + 1.5
    assert m.loc["melanoma", "asymmetry"] > m.loc["nevus", "asymmetry"]
    assert m.loc["melanoma", "border_irregularity"] > m.loc["nevus", "border_irregularity"]


def _features(df: pd.DataFrame) -> np.ndarray:
    cols = [df.diameter_mm, df.asymmetry, df.border_irregularity, df.skin_tone, df.hair]
    cols += [df.colors.map(lambda c, v=v: float(v in c)) for v in derm.COLOR_VOCAB]
    cols += [df.structures.map(lambda s, v=v: float(v in s)) for v in derm.STRUCTURE_VOCAB]
    return np.stack([np.asarray(c, float) for c in cols], 1)


def test_derm_ground_truth_overlaps_between_classes() -> None:
    """Softmax regression on the ground-truth attributes alone: informative but not perfect."""
    df = _sampled(400)
    x = _features(df)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    x = np.concatenate([x, np.ones((len(x), 1))], 1)
    y = df["class"].map({c: i for i, c in enumerate(derm.CLASSES)}).to_numpy()
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:900], idx[900:]
    w = np.zeros((x.shape[1], 3))
    onehot = np.eye(3)[y[tr]]
    for _ in range(1500):  # full-batch gradient descent on the cross-entropy
        z = x[tr] @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * x[tr].T @ (p - onehot) / len(tr)
    acc = float(((x[te] @ w).argmax(1) == y[te]).mean())
    assert 0.6 < acc < 0.95, acc


PALETTE = np.array([derm.COLOR_RGB[c] for c in derm.COLOR_VOCAB], float)


def _lesion_stats(img: np.ndarray) -> tuple[float, int]:
    """(lesion area share, number of vocabulary colours covering >= 10% of it), from pixels only."""
    from scipy import ndimage as ndi

    a = img.astype(float)
    ring = np.concatenate([a[:, 2, 2:-2], a[:, -3, 2:-2], a[:, 2:-2, 2], a[:, 2:-2, -3]], 1)
    skin = np.median(ring, 1)
    dist = np.sqrt(((a - skin[:, None, None]) ** 2).sum(0))
    lesion = ndi.binary_opening(dist > 45, np.ones((2, 2)))  # thin hairs drop out
    if lesion.sum() < 4:
        return 0.0, 0
    px = a[:, lesion].T
    nearest = ((px[:, None, :] - PALETTE[None]) ** 2).sum(-1).argmin(1)
    share = np.bincount(nearest, minlength=len(PALETTE)) / len(nearest)
    return float(lesion.mean()), int((share >= 0.1).sum())


def test_derm_image_statistics_per_class() -> None:
    """The pixels agree with the labels: melanomas are larger and show more colours than nevi."""
    area, colours, labelled = {}, {}, {}
    for cls in derm.CLASSES:
        got = [derm.render(cls, i, 40, 3) for i in range(40)]
        stats = [_lesion_stats(a) for a, _ in got]
        area[cls] = np.mean([s[0] for s in stats])
        colours[cls] = np.mean([s[1] for s in stats])
        labelled[cls] = np.mean([r["n_colors"] for _, r in got])
    assert labelled["melanoma"] > labelled["nevus"] + 1
    assert area["melanoma"] > 1.2 * area["nevus"]
    assert colours["melanoma"] > colours["nevus"] + 0.25


# ---------------------------------------------------------------------------------------------
# cxr


def test_cxr_16_bit_output(cxr_set) -> None:  # type: ignore[no-untyped-def]
    ds = cxr_set
    assert ds.dtype == "uint16" and ds.channels == 1 and ds.modality == "DX"
    assert ds.manifest.outputs["mm_per_px"] == pytest.approx(430 / 64)
    img = read_image(ds.path_of(0))
    a = img.array
    assert a.shape == (1, 64, 64) and a.dtype == np.uint16
    assert a.max() > 40000 and a.min() < 8000  # the full 16-bit range is used
    assert len(np.unique(a)) > 1000  # not 8-bit data in a 16-bit file


def test_cxr_ground_truth(cxr_set) -> None:  # type: ignore[no-untyped-def]
    t = cxr_set.table
    assert set(t["class"].value_counts()) == {6}
    assert np.allclose(t.ctr, t.heart_width_px / t.thorax_width_px, atol=1e-3)
    card = t["class"] == "cardiomegaly"
    assert (t.ctr[card] > 0.5).all() and t.ctr[~card].between(0.38, 0.49).all()
    finding = t["class"].isin(["pneumonia", "pleural_effusion"])
    assert set(t.side[finding]) <= {"left", "right", "bilateral"} and (t.side[~finding] == "none").all()
    assert set(t.zone[t["class"] == "pneumonia"]) <= {"upper", "middle", "lower"}
    assert (t.zone[t["class"] == "pleural_effusion"] == "lower").all()
    assert (t.zone[~finding] == "none").all()
    assert t.opacity_extent[finding].between(0.03, 0.6).all()
    assert (t.opacity_extent[~finding] == 0).all()
    assert (t.thorax_width_px.between(0.6 * 64, 0.8 * 64)).all()


ZONE_ROWS = {"upper": (0.15, 0.33), "middle": (0.36, 0.55), "lower": (0.58, 0.74)}
SIDE_COLS = {"right": (0.2, 0.36), "left": (0.64, 0.8)}  # patient's right = image left


def _box_mean(a: np.ndarray, side: str, zone: str) -> float:
    n = a.shape[-1]
    r0, r1 = (int(v * n) for v in ZONE_ROWS[zone])
    c0, c1 = (int(v * n) for v in SIDE_COLS[side])
    return float(a[0, r0:r1, c0:c1].mean())


def test_cxr_opacity_is_where_the_labels_say() -> None:
    """Pneumonia is brighter in its stated side and zone than the other side; normal is not."""
    size = 48
    other = {"right": "left", "left": "right"}
    diffs = []
    for i in range(12):
        arr, row = cxr.render("pneumonia", i, size, 11)
        if row["side"] == "bilateral":
            continue
        a = arr.astype(float)
        diffs.append(_box_mean(a, row["side"], row["zone"]) - _box_mean(a, other[row["side"]], row["zone"]))
    normal = []
    for i in range(8):
        a = cxr.render("normal", i, size, 11)[0].astype(float)
        normal += [_box_mean(a, "right", z) - _box_mean(a, "left", z) for z in ZONE_ROWS]
    assert len(diffs) >= 6
    assert np.mean(diffs) > 2500 and np.mean(np.array(diffs) > 0) >= 0.8
    assert abs(np.mean(normal)) < np.mean(diffs) / 2
    # Effusion: the lower zone of the stated side is brighter than the other side.
    eff = []
    for i in range(8):
        arr, row = cxr.render("pleural_effusion", i, size, 11)
        if row["side"] != "bilateral":
            a = arr.astype(float)
            eff.append(_box_mean(a, row["side"], "lower") - _box_mean(a, other[row["side"]], "lower"))
    assert eff and np.mean(eff) > 2500


# ---------------------------------------------------------------------------------------------
# CLI and errors


def test_cli_demo_then_info(tmp_path: Path) -> None:
    out = tmp_path / "cxr"
    r = runner.invoke(app, ["data", "demo", "cxr", "--out", str(out), "--n-per-class", "2",
                            "--size", "32", "--seed", "4"])
    assert r.exit_code == 0, r.output
    ds = open_dataset(out)
    assert len(ds.table) == 8 and ds.manifest.outputs["demo"] == "cxr"
    r = runner.invoke(app, ["data", "info", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["phantom"] is True and info["dtypes"] == {"uint16": 8}
    r = runner.invoke(app, ["data", "demo", "derm", "--out", str(tmp_path / "d"), "--n-per-class", "1",
                            "--size", "32"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "info", str(tmp_path / "d")])
    assert r.exit_code == 0 and "PHANTOM" in r.output


def test_cli_refuses_to_clobber_and_bad_options(tmp_path: Path) -> None:
    out = tmp_path / "d"
    args = ["data", "demo", "derm", "--out", str(out), "--n-per-class", "1", "--size", "32"]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "already exists" in r.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    r = runner.invoke(app, ["data", "demo", "derm", "--out", str(tmp_path / "e"), "--size", "8"])
    assert r.exit_code == 1 and "--size" in r.output
    assert not (tmp_path / "e").exists()
    with pytest.raises(MedsynthError, match="n-per-class"):
        DemoConfig("cxr", str(tmp_path / "f"), n_per_class=0)
    with pytest.raises(MedsynthError, match="unknown demo"):
        DemoConfig("mri", str(tmp_path / "f"))


def test_cli_split_fractions_make_a_big_test_split(tmp_path: Path) -> None:
    """--test-fraction / --val-fraction (the demo's 300-per-class test split for evaluate)."""
    import pandas as pd

    out = tmp_path / "big-test"
    r = runner.invoke(app, ["data", "demo", "derm", "--out", str(out), "--n-per-class", "20",
                            "--size", "16", "--val-fraction", "0.1", "--test-fraction", "0.6"])
    assert r.exit_code == 0, r.output
    counts = pd.read_csv(out / "labels.csv").groupby(["split", "class"]).size()
    assert set(counts["test"].tolist()) == {12} and set(counts["val"].tolist()) == {2}
    assert set(counts["train"].tolist()) == {6}
    r = runner.invoke(app, ["data", "demo", "derm", "--out", str(tmp_path / "x"), "--n-per-class",
                            "4", "--size", "16", "--val-fraction", "0.5", "--test-fraction", "0.5"])
    assert r.exit_code != 0 and "sum below 1" in r.output
