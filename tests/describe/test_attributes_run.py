"""End to end with the offline attributes backend: store layout, records, resume, show."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.artifacts import read_jsonl, read_manifest
from medsynth.cli import app
from medsynth.store import open_store

runner = CliRunner()


def _invoke(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_describe_writes_a_store(derm_dataset: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    out = _invoke("describe", str(derm_dataset), "--out", str(store), "--concurrency", "1",
                  "--split", "all")
    assert "described 8" in out and "split all" in out
    st = open_store(store)
    assert st.classes == ["melanoma", "nevus"]
    m = read_manifest(store, "describe")
    assert m.outputs["status"] == "complete"
    assert m.outputs["counts"] == {"melanoma": {"ok": 4, "failed": 0}, "nevus": {"ok": 4, "failed": 0}}
    assert m.outputs["backends"] == ["attributes"]
    assert m.inputs[0]["stage"] == "data"
    labels = pd.read_csv(derm_dataset / "labels.csv").set_index("image_id")
    for r in st.records():
        assert r.backend == "attributes" and r.model.startswith("medsynth.measure/")
        assert r.template_version.startswith("derm@1.1+")
        assert r.text.startswith("A ") and " mm " in r.text and "lesion" in r.text
        truth = labels.loc[r.image_id]
        # The drawn diameter is recovered, and the colour drawn is the colour named.
        assert r.attributes["diameter_mm"] == pytest.approx(truth["diameter_mm"], rel=0.12)
        assert r.attributes["colors"] == [truth["colors"]]
    summary = json.loads((store / "nevus" / "summary.json").read_text())
    assert summary["n_ok"] == 4 and summary["attributes"]["colors"] == {"light_brown": 4}
    # Few distinct values stay frequencies; continuous ones with many values become statistics.
    assert "numeric" in summary and len(summary["attributes"]["diameter_mm"]) == 4


def test_resume_and_limit_give_one_record_per_image(derm_dataset: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _invoke("describe", str(derm_dataset), "--out", str(store), "--limit", "3", "--split", "all")
    assert len(open_store(store).records()) == 3
    res = runner.invoke(app, ["describe", str(derm_dataset), "--out", str(store), "--split", "all"])
    assert res.exit_code == 1 and "--resume" in res.output
    out = _invoke("describe", str(derm_dataset), "--out", str(store), "--resume", "--split", "all")
    assert "described 5" in out and "skipped 3" in out
    ids = [d["image_id"] for f in store.glob("*/descriptions.jsonl") for d in read_jsonl(f)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 8


def test_default_split_is_train(derm_dataset: Path, tmp_path: Path) -> None:
    """generate conditions on training images' descriptions: only those are described unless
    --split says otherwise; a dataset without a train split is described whole."""
    store = tmp_path / "store"
    out = _invoke("describe", str(derm_dataset), "--out", str(store))
    assert "described 6" in out and "split train" in out
    recs = open_store(store).records()
    assert len(recs) == 6 and {r.split for r in recs} == {"train"}
    assert read_manifest(store, "describe").config["split"] == "train"
    # The rest on request, into the same store.
    out = _invoke("describe", str(derm_dataset), "--out", str(store), "--resume", "--split", "all")
    assert "described 2" in out and "skipped 6" in out
    # No train split at all (e.g. every image held out): the default describes everything.
    labels = pd.read_csv(derm_dataset / "labels.csv")
    labels["split"] = "test"
    labels.to_csv(derm_dataset / "labels.csv", index=False)
    out = _invoke("describe", str(derm_dataset), "--out", str(tmp_path / "store2"))
    assert "described 8" in out and "split all" in out


def test_resume_is_keyed_on_the_template_version(derm_dataset: Path, tmp_path: Path) -> None:
    """An edited template is a different version (its content hash): --resume re-describes the
    images with it instead of skipping them, and keeps the old template's records."""
    from medsynth.describe.prompts import TEMPLATE_DIR
    from medsynth.describe.run import existing_keys

    store = tmp_path / "store"
    mine = tmp_path / "derm.yaml"
    mine.write_bytes((TEMPLATE_DIR / "derm.yaml").read_bytes())
    _invoke("describe", str(derm_dataset), "--out", str(store), "--template", str(mine))
    old = {r.template_version for r in open_store(store).records()}
    assert len(old) == 1
    out = _invoke("describe", str(derm_dataset), "--out", str(store), "--template", str(mine),
                  "--resume")
    assert "described 0" in out and "skipped 6" in out
    # Same name and version line, different content: a new hash.
    mine.write_text(mine.read_text() + "\n# edited: clearer border question\n")
    out = _invoke("describe", str(derm_dataset), "--out", str(store), "--template", str(mine),
                  "--resume")
    assert "described 6" in out and "skipped 0" in out
    recs = open_store(store).records()
    versions = {r.template_version for r in recs}
    assert len(recs) == 12 and len(versions) == 2 and old < versions
    (new,) = versions - old
    assert new.split("+")[0] == next(iter(old)).split("+")[0]  # only the hash differs
    assert len(existing_keys(store, recs[0].backend, recs[0].model, new)) == 6
    runs = read_manifest(store, "describe").outputs["runs"]
    assert sorted(r["template_version"] for r in runs) == sorted(versions)
    # A changed template needs no --resume either: like another backend, it adds to the store.
    mine.write_text(mine.read_text() + "# edited again\n")
    out = _invoke("describe", str(derm_dataset), "--out", str(store), "--template", str(mine))
    assert "described 6" in out and len(open_store(store).records()) == 18
    # generate draws one description per image, its latest (the one training used).
    st = open_store(store)
    latest = st.by_image()
    for cls in st.classes:
        drawn = [st.sample(cls, random.Random(i)) for i in range(200)]
        assert {r.template_version for r in drawn} == {latest[r.image_id].template_version
                                                       for r in drawn}
        n_images = len({r.image_id for r in st.records(cls)})
        assert len({r.image_id for r in drawn}) == n_images


def test_split_option_and_show(derm_dataset: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _invoke("describe", "--out", str(store), str(derm_dataset), "--split", "test")
    assert len(open_store(store).records()) == 2
    out = _invoke("describe", "show", str(store))
    assert "melanoma" in out and "nevus" in out and "diameter_mm" in out and "colors" in out
    out = _invoke("describe", "show", str(store), "--class", "nevus", "--n", "1")
    assert "nevus" in out and "melanoma:" not in out


def test_user_errors_are_clear(derm_dataset: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["describe", str(tmp_path / "nope"), "--out", str(tmp_path / "s")])
    assert res.exit_code == 1 and "not a medsynth dataset" in res.output
    res = runner.invoke(app, ["describe", str(derm_dataset), "--out", str(tmp_path / "s"),
                              "--modality", "mri"])
    assert res.exit_code == 1 and "attributes backend measures derm and cxr" in res.output
    res = runner.invoke(app, ["describe", str(derm_dataset), "--out", str(tmp_path / "s"),
                              "--backend", "openai"])
    assert res.exit_code == 2 and "--base-url" in res.output
    res = runner.invoke(app, ["describe", "show", str(tmp_path / "s2")])
    assert res.exit_code == 1 and "medsynth.json" in res.output
