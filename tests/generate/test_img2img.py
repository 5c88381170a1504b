"""``generate --init-images / --twin / --balance`` end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsynth.imaging.dataset import open_dataset
from tests.generate.test_plans import make_dataset
from tests.generate.test_run import generate, read_png

FAST = ["--steps", "2", "--batch-size", "4"]


def table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "samples.csv", keep_default_na=False, dtype={"init_image_id": str})


def manifest(out: Path) -> dict:
    return json.loads((out / "medsynth.json").read_text())


@pytest.fixture(scope="module")
def gray_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uint16 grayscale dataset for the gray16 model: train and test splits."""
    return make_dataset(tmp_path_factory.mktemp("gray") / "ds",
                        {"normal": {"train": 4, "test": 6}, "pneumonia": {"train": 3, "test": 6}})


def test_strength_semantics(gray16_model: Path, gray_ds: Path, tmp_path: Path) -> None:
    """S = 1 is text-to-image (the same pixels); small S keeps the source; distance grows with S."""
    ds = open_dataset(gray_ds)
    common = ["--class", "normal", "--n", "4", "--sampler", "ddim", "--steps", "25",
              "--batch-size", "4", "--guidance", "1"]
    plain = tmp_path / "plain"
    assert generate(gray16_model, *common, "--out", plain).exit_code == 0
    rows = {r.image_id: r for _, r in ds.table.iterrows()}
    dist, sources = {}, None
    for s in ("0.5", "0.04", "1.0"):
        out = tmp_path / f"s{s}"
        res = generate(gray16_model, *common, "--out", out, "--init-images", gray_ds,
                       "--strength", s)
        assert res.exit_code == 0, res.output
        t = table(out)
        assert (t["strength"] == float(s)).all()
        if s == "1.0":  # from noise: the image is not used, the pixels are text-to-image's
            assert (t["init_image_id"] == "").all()
            for a, b in zip(t["png"], table(plain)["png"], strict=True):
                np.testing.assert_array_equal(read_png(out / a), read_png(plain / b))
        else:  # the sources depend on class, index and seed, not on the strength
            assert set(t["init_image_id"]) <= set(ds.split("train")["image_id"])
            assert sources is None or list(t["init_image_id"]) == sources
            sources = list(t["init_image_id"])
        dist[s] = float(np.mean([np.abs(read_png(out / p).astype(float)
                                        - ds.load(rows[i]).array).mean()
                                 for p, i in zip(t["png"], sources, strict=True)]))
    # One of 25 steps from the image (t ~ 40 of 1000) keeps it within a few % of the range.
    assert dist["0.04"] < 0.03 * 4095
    assert dist["0.04"] < dist["0.5"] < dist["1.0"], dist


def test_translation_records_sources_and_is_deterministic(rgb_model: Path, tmp_path: Path) -> None:
    ds = rgb_model.parent / "dataset"  # the model's own training set: 2 images per class
    args = ["--init-images", ds, "--init-class", "nevus", "--class", "melanoma", "--n", "5",
            "--strength", "0.5", *FAST]
    a, b = tmp_path / "a", tmp_path / "b"
    res = generate(rgb_model, *args, "--out", a)
    assert res.exit_code == 0, res.output
    t = table(a)
    assert (t["class"] == "melanoma").all() and (t["init_class"] == "nevus").all()
    assert (t["strength"] == 0.5).all() and (t["twin_of"] == "").all()
    ids = t["init_image_id"].tolist()
    assert set(ids) == {"nevus_0", "nevus_1"} and ids[2:] == ids[:2] + ids[:1]  # cycled
    m = manifest(a)
    init = m["outputs"]["init_images"]
    assert init["splits"] == ["train"] and init["n_sources"] == 2 and init["strength"] == 0.5
    assert init["classes"] == ["nevus"] and init["kind"] == "dataset"
    ref = next(i for i in m["inputs"] if i.get("role") == "init-images")
    assert ref["stage"] == "data" and ref["sha256"] == open_dataset(ds).sha256
    assert m["inputs"][0]["stage"] == "train"  # the model stays the first input (lineage)
    # Same options, another folder: the same sources and the same pixels.
    assert generate(rgb_model, *args, "--out", b).exit_code == 0
    pd.testing.assert_frame_equal(t, table(b))
    for p in t["png"]:
        np.testing.assert_array_equal(read_png(a / p), read_png(b / p))


def test_resumed_run_keeps_each_samples_source(rgb_model: Path, tmp_path: Path) -> None:
    ds = rgb_model.parent / "dataset"
    args = ["--init-images", ds, "--class", "*", "--n", "3", "--strength", "0.6",
            "--steps", "2", "--batch-size", "2"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert generate(rgb_model, *args, "--out", full).exit_code == 0
    assert generate(rgb_model, *args, "--out", cut).exit_code == 0
    # A killed run: 2 of 6 images journaled, the rest and the final files never written.
    journal = cut / ".journal" / "rank0.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:2]) + "\n")
    keep = {json.loads(x)["sample_id"] for x in lines[:2]}
    for p in [*cut.rglob("*.png"), *cut.rglob("*.txt")]:
        if p.stem not in keep:
            p.unlink()
    (cut / "medsynth.json").unlink()
    (cut / "samples.csv").unlink()
    res = generate(rgb_model, *args, "--out", cut, "--strength", "0.7", "--resume")
    assert res.exit_code == 1 and "strength (0.6 -> 0.7)" in " ".join(res.output.split())
    res = generate(rgb_model, *args, "--out", cut, "--resume")
    assert res.exit_code == 0 and "made 4 now" in " ".join(res.output.split()), res.output
    pd.testing.assert_frame_equal(table(full), table(cut))
    for p in table(full)["png"]:  # batches differ (2+2 vs 2+2+2): float rounding at most
        diff = np.abs(read_png(full / p).astype(int) - read_png(cut / p).astype(int))
        assert diff.max() <= 1


def test_image_folder_sources_are_fitted(rgb_model: Path, image_folder: Path,
                                         tmp_path: Path) -> None:
    """Non-square 20 x 24 RGB files become the model's 16 x 16 by data import's pad rule."""
    out = tmp_path / "out"
    res = generate(rgb_model, "--init-images", image_folder, "--init-class", "disc",
                   "--init-resize", "crop", "--class", "nevus", "--n", "3", "--out", out,
                   "--strength", "0.3", *FAST)
    assert res.exit_code == 0, res.output
    t = table(out)
    assert t["init_image_id"].str.match(r"disc/img\d\.png").all()
    assert (t["init_class"] == "disc").all()
    m = manifest(out)
    assert m["outputs"]["init_images"]["kind"] == "folder"
    ref = next(i for i in m["inputs"] if i.get("role") == "init-images")
    assert ref["sha256"] is None and ref["n_images"] == 12


def test_bad_init_images(gray16_model: Path, rgb_model: Path, gray_ds: Path, image_folder: Path,
                         tmp_path: Path) -> None:
    def fails(model: Path, *args: object, code: int = 1) -> str:
        out = tmp_path / "bad"
        res = generate(model, *args, "--out", out, *FAST)
        assert res.exit_code == code, res.output
        assert not out.exists() or not any(out.iterdir())  # no debris for the next run
        return " ".join(res.output.split())

    assert "--strength must be in (0, 1]" in fails(gray16_model, "--init-images", gray_ds,
                                                   "--strength", "0", code=2)
    assert "--strength must be in (0, 1]" in fails(gray16_model, "--init-images", gray_ds,
                                                   "--strength", "1.01", code=2)
    assert "--strength needs --init-images" in fails(gray16_model, "--strength", "0.5", code=2)
    # RGB files into a grayscale model: named, no silent conversion.
    msg = fails(gray16_model, "--init-images", image_folder, "--strength", "0.5")
    assert "img0.png: 3-channel (RGB) image, but the model makes 1-channel" in msg
    # 8-bit images into a 16-bit model (its intensity mapping is in 16-bit values).
    msg = fails(gray16_model, "--init-images", make_dataset(
        tmp_path / "gray8", {"normal": {"train": 1}}, dtype="uint8", hi=255), "--strength", "0.5")
    assert "uint8 pixels, but the model's are uint16" in msg
    assert "no such folder" in fails(gray16_model, "--init-images", tmp_path / "nowhere")
    assert "no images in split(s) val" in fails(gray16_model, "--init-images", gray_ds,
                                                "--split", "val")
    assert "--init-class 'effusion'" in fails(gray16_model, "--init-images", gray_ds,
                                              "--init-class", "effusion")
    assert "is a 'train' artifact" in fails(gray16_model, "--init-images", gray16_model)


def test_twin_maps_real_images_and_checks_near_copies(gray16_model: Path, gray_ds: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "twin"
    res = generate(gray16_model, "--twin", gray_ds, "--split", "train", "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    assert "twin privacy check: near-copy share" in " ".join(res.output.split())
    t = table(out)
    ds = open_dataset(gray_ds)
    train = ds.split("train")
    assert sorted(t["twin_of"]) == sorted(train["image_id"])  # one per real image
    real_class = dict(zip(train["image_id"], train["class"], strict=True))
    assert all(real_class[r] == c for r, c in zip(t["twin_of"], t["class"], strict=True))
    assert (t["strength"] == 1.0).all() and (t["init_image_id"] == "").all()
    # The model's store describes another dataset: stored texts of the class, not "own" ones.
    assert t["description_source"].str.startswith("store:").all()
    m = manifest(out)
    twin = m["outputs"]["twin"]
    assert twin["stands_for"] == dict(zip(t["sample_id"], t["twin_of"], strict=True))
    assert twin["n_real"] == 7 and twin["from"] == "noise"
    priv = twin["privacy"]
    assert priv["reference_split"] == "test" and priv["n_reference"] == 12
    assert priv["n_private"] == 7 and priv["n_twins"] == 7
    for space in ("feature", "pixel"):
        s = priv[space]
        assert 0 <= s["near_copy_share"] <= 1 and s["expected_share"] == 0.01
        assert s["threshold"] > 0 and s["synth_min_nn"] >= 0
    assert priv["nearest_is_own"]["chance"] == pytest.approx(1 / 7)
    rows = pd.read_csv(out / "privacy.csv", keep_default_na=False)
    assert list(rows["sample_id"]) == list(t["sample_id"])
    assert set(rows["nn_pixel_image_id"]) <= set(train["image_id"])
    assert rows["near_copy_pixel"].sum() == priv["pixel"]["n_near_copies"]
    # Random-weight noise is no copy of anything: far from the real images in pixels.
    assert priv["pixel"]["near_copy_share"] == 0.0
    # The same figures as evaluate's privacy section on this set (one method, shared).
    from medsynth.evaluate.features import FeatureExtractor
    from medsynth.evaluate.inputs import default_size, load_real, load_synthetic, open_synthetic
    from medsynth.evaluate.privacy import privacy_report

    classes = ds.classes
    size = default_size(ds)
    real_train, real_test = (load_real(ds, s, size, classes) for s in ("train", "test"))
    synth = load_synthetic(open_synthetic(out), size, classes)
    fx = FeatureExtractor()
    ev, _ = privacy_report(real_train, real_test, fx(real_train.x), fx(real_test.x),
                           {"twin": synth}, {"twin": fx(synth.x)}, q=0.01, n_pairs=1,
                           classes=classes)
    for space in ("feature", "pixel"):
        assert ev["sets"]["twin"][space] == pytest.approx(priv[space], rel=1e-5, abs=1e-7)


def test_twin_from_the_images_at_low_strength_is_flagged(gray16_model: Path, gray_ds: Path,
                                                         tmp_path: Path) -> None:
    """At 1 of 25 steps a twin is its real image: every one a near-copy, each nearest its own."""
    out = tmp_path / "twin"
    res = generate(gray16_model, "--twin", gray_ds, "--strength", "0.04", "--out", out,
                   "--sampler", "ddim", "--steps", "25", "--guidance", "1")
    assert res.exit_code == 0, res.output
    t = table(out)
    assert (t["init_image_id"] == t["twin_of"]).all()
    priv = manifest(out)["outputs"]["twin"]["privacy"]
    assert priv["pixel"]["near_copy_share"] == 1.0
    assert priv["nearest_is_own"]["pixel"] == 1.0 and priv["nearest_is_own"]["feature"] == 1.0


def test_twin_with_own_descriptions(rgb_model: Path, tmp_path: Path) -> None:
    """The model's store describes its training set: each twin gets its real image's text."""
    from medsynth.store import open_store

    ds = rgb_model.parent / "dataset"
    store = open_store(rgb_model.parent / "store")
    texts = {i: r.text for i, r in store.by_image().items()}
    out = tmp_path / "twin"
    res = generate(rgb_model, "--twin", ds, "--out", out, "--no-privacy-check", *FAST)
    assert res.exit_code == 0, res.output
    t = table(out)
    described = t[t["twin_of"].isin(list(texts))]
    assert len(described) == 3  # the fixture store describes 3 of the 4 training images
    assert (described["description"] == described["twin_of"].map(texts)).all()
    assert (described["description_source"] == "store:" + described["twin_of"]).all()
    rest = t[~t["twin_of"].isin(list(texts))]  # nevus_1: a stored text of its class instead
    assert (rest["description_source"] == "store:nevus_0").all()
    assert manifest(out)["outputs"]["twin"]["privacy"] == {"skipped": "--no-privacy-check"}
    assert not (out / "privacy.csv").exists()


def test_evaluate_refuses_sets_made_from_test_images(gray16_model: Path, gray_ds: Path,
                                                     tmp_path: Path) -> None:
    from medsynth.errors import MedsynthError
    from medsynth.evaluate.inputs import open_inputs

    out = tmp_path / "from-test"
    res = generate(gray16_model, "--init-images", gray_ds, "--split", "test", "--class", "normal",
                   "--n", "2", "--strength", "0.5", "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    with pytest.raises(MedsynthError, match=r"made from the test split .*would leak"):
        open_inputs(gray_ds, [out], independent_model=True)
    ok = tmp_path / "from-train"
    res = generate(gray16_model, "--init-images", gray_ds, "--class", "normal", "--n", "2",
                   "--strength", "0.5", "--out", ok, *FAST)
    assert res.exit_code == 0, res.output
    open_inputs(gray_ds, [ok], independent_model=True)


def test_bad_twin_and_balance(gray16_model: Path, gray_ds: Path, image_folder: Path,
                              tmp_path: Path) -> None:
    out = tmp_path / "bad"
    only_test = make_dataset(tmp_path / "t", {"normal": {"test": 2}})
    cases = [
        (["--twin", only_test], 1, "no images in split(s) train (it has test)"),
        (["--twin", image_folder], 1, "not a medsynth dataset"),
        (["--twin", gray_ds, "--n", "3"], 2, "--n does not go with --twin"),
        (["--twin", gray_ds, "--init-images", gray_ds], 2, "--twin excludes --init-images"),
        (["--balance", gray_ds, "--target", "3"], 2, "--target 3: below the real count of "
                                                     "normal (4)"),
        (["--balance", gray_ds, "--class", "normal"], 1, "already balanced at 4"),
        (["--balance", gray_ds, "--n", "2"], 2, "--n does not go with --balance"),
        (["--split", "val"], 2, "--split needs --init-images, --twin or --balance"),
        (["--target", "5"], 2, "--target needs --balance"),
    ]
    for args, code, message in cases:
        res = generate(gray16_model, *args, "--out", out, *FAST)
        assert res.exit_code == code, (args, res.output)
        assert message in " ".join(res.output.split()), (args, res.output)
        assert not out.exists() or not any(out.iterdir())


def test_balance_tops_up_minority_classes(gray16_model: Path, gray_ds: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "bal"
    res = generate(gray16_model, "--balance", gray_ds, "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    t = table(out)
    assert t.groupby("class").size().to_dict() == {"pneumonia": 1}  # 4 normal, 3 pneumonia
    bal = manifest(out)["outputs"]["balance"]
    assert bal["real_counts"] == {"normal": 4, "pneumonia": 3} and bal["target"] == 4
    assert bal["synthetic_counts"] == {"normal": 0, "pneumonia": 1}
    # A number target, from the real images of the other class (translation).
    out2 = tmp_path / "bal2"
    res = generate(gray16_model, "--balance", gray_ds, "--target", "6", "--init-images", gray_ds,
                   "--init-class", "normal", "--strength", "0.5", "--out", out2, *FAST)
    assert res.exit_code == 0, res.output
    t = table(out2)
    assert t.groupby("class").size().to_dict() == {"normal": 2, "pneumonia": 3}
    assert (t["init_class"] == "normal").all()
    m = manifest(out2)
    assert m["outputs"]["balance"]["after"] == {"normal": 6, "pneumonia": 6}
    assert {i.get("role") for i in m["inputs"]} >= {"balance", "init-images"}
