"""The one lineage walk (synthetic set -> model -> refined-from models -> datasets) on chains of
hand-made manifests, and the shared samples.csv definition and reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from medsynth.artifacts import input_ref, walk_lineage, write_manifest
from medsynth.errors import MedsynthError
from medsynth.synthset import (
    COLUMNS,
    SAMPLE_COLUMNS,
    open_synthetic,
    samples_table,
    write_samples,
)


def _data(root: Path) -> Path:
    write_manifest(root, "data", config={}, outputs={"classes": ["a", "b"]})
    return root


def _model(root: Path, stage: str, *inputs: tuple[Path, str], splits: list[str] | None = None
           ) -> Path:
    write_manifest(root, stage, config={"train_splits": splits or ["train"]},
                   inputs=[input_ref(p, s) for p, s in inputs])
    return root


def _synth(root: Path, model: Path, stage: str = "train", *, rows: int = 2) -> Path:
    write_samples(root, [{"sample_id": f"a-{i:06d}", "class": "a", "png": f"png/a/a-{i}.png"}
                         for i in range(rows)])
    write_manifest(root, "generate", inputs=[input_ref(model, stage)],
                   outputs={"samples": "samples.csv", "synthetic": True})
    return root


@pytest.fixture
def chain(tmp_path: Path) -> dict[str, Path]:
    """data -> trained -> refined once -> refined twice (also on a second dataset) -> synth."""
    d = {"data": _data(tmp_path / "data"), "data2": _data(tmp_path / "data2")}
    d["trained"] = _model(tmp_path / "trained", "train", (d["data"], "data"))
    d["refined1"] = _model(tmp_path / "refined1", "refine", (d["trained"], "train"))
    d["refined2"] = _model(tmp_path / "refined2", "refine", (d["refined1"], "refine"),
                           (d["data2"], "data"))
    d["synth"] = _synth(tmp_path / "synth", d["refined2"], "refine")
    return d


def test_walk_from_a_synthetic_set_through_refine_hops(chain: dict[str, Path]) -> None:
    lin = walk_lineage(chain["synth"])
    assert lin.start.stage == "generate" and [m.stage for m in lin.sources] == ["generate"]
    assert [m.folder for m in lin.models] == [chain["refined2"], chain["refined1"], chain["trained"]]
    assert lin.generator.folder == chain["refined2"] and lin.trained.stage == "train"
    assert [(m.folder.name, Path(r["path"]).name) for m, r in lin.data] == [
        ("refined2", "data2"), ("trained", "data")]
    assert lin.data_sha256() == {input_ref(chain["data"])["sha256"],
                                 input_ref(chain["data2"])["sha256"]}
    assert lin.problems == []
    # From a model, the walk starts at the models.
    lin = walk_lineage(chain["refined1"])
    assert lin.sources == [] and [m.folder.name for m in lin.models] == ["refined1", "trained"]


def test_walk_through_a_filtered_set_and_a_judged_folder(chain: dict[str, Path],
                                                         tmp_path: Path) -> None:
    judged = tmp_path / "judged"
    write_manifest(judged, "judge", inputs=[input_ref(chain["synth"], "generate")])
    filtered = tmp_path / "filtered"
    write_samples(filtered, [{"sample_id": "a-000000", "class": "a", "png": "png/a/x.png"}])
    write_manifest(filtered, "judge", inputs=[input_ref(judged, "judge")],
                   outputs={"synthetic": True})
    lin = walk_lineage(filtered)
    assert [m.folder.name for m in lin.sources] == ["filtered", "judged", "synth"]
    assert [m.folder.name for m in lin.models] == ["refined2", "refined1", "trained"]
    s = open_synthetic(filtered)  # a filtered set reads like any synthetic set
    assert s.model_manifest.folder == chain["refined2"] and len(s.table) == 1


def test_broken_changed_and_looping_links_are_reported(chain: dict[str, Path],
                                                       tmp_path: Path) -> None:
    # A model retrained in place after the set was made: followed, and noted.
    write_manifest(chain["refined2"], "refine", config={"train_splits": ["train", "test"]},
                   inputs=[input_ref(chain["refined1"], "refine")])
    lin = walk_lineage(chain["synth"])
    assert len(lin.models) == 3 and len(lin.problems) == 1 and "changed after" in lin.problems[0]
    # A folder gone: the walk stops there and says so.
    shutil.rmtree(chain["trained"])
    lin = walk_lineage(chain["synth"])
    assert [m.folder.name for m in lin.models] == ["refined2", "refined1"]
    assert any("cannot be read" in p and "trained" in p for p in lin.problems)
    # A loop (a hand-edited manifest) ends the walk instead of hanging.
    a, b = tmp_path / "loop_a", tmp_path / "loop_b"
    write_manifest(a, "refine", inputs=[{"path": str(b), "stage": "refine"}])
    write_manifest(b, "refine", inputs=[{"path": str(a), "stage": "refine"}])
    lin = walk_lineage(a)
    assert len(lin.models) == 2 and any("loops" in p for p in lin.problems)


def test_relative_input_paths_resolve_against_the_artifact(tmp_path: Path) -> None:
    data = _data(tmp_path / "d")
    model = _model(tmp_path / "m", "train", (data, "data"))
    synth = tmp_path / "s"
    write_samples(synth, [{"sample_id": "a-000000", "class": "a", "png": "p.png"}])
    write_manifest(synth, "generate", inputs=[{"path": "../m", "stage": "train"}])
    assert walk_lineage(synth).generator.folder.resolve() == model.resolve()


def test_samples_columns_are_defined_once(tmp_path: Path) -> None:
    from medsynth.evaluate import inputs
    from medsynth.generate import run

    assert run.SAMPLES_CSV == inputs.SAMPLES_CSV == "samples.csv"
    assert inputs.open_synthetic is open_synthetic
    assert not hasattr(run, "COLUMNS")  # generate has no list of its own any more
    assert SAMPLE_COLUMNS[:2] == ("sample_id", "class") and all(COLUMNS.values())
    t = samples_table([{"sample_id": "x-000001", "class": "x", "seed": 3}])
    assert list(t.columns) == list(SAMPLE_COLUMNS) and t.loc[0, "seed"] == 3
    with pytest.raises(ValueError, match="not defined in medsynth.synthset.COLUMNS"):
        samples_table([{"sample_id": "x", "class": "x", "colour": "red"}])
    write_samples(tmp_path, [{"sample_id": "x-000001", "class": "x", "png": "a.png"}])
    assert list(pd.read_csv(tmp_path / "samples.csv").columns) == list(SAMPLE_COLUMNS)


def test_reader_refuses_what_is_not_a_synthetic_set(chain: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MedsynthError, match="not a medsynth generate"):
        open_synthetic(tmp_path / "nothing")
    with pytest.raises(MedsynthError, match="is a 'refine' artifact, expected a synthetic set"):
        open_synthetic(chain["refined1"])
    s = open_synthetic(chain["synth"])
    assert s.image_column == "png" and s.classes == ["a"]
    assert s.path_of(s.table.iloc[0]) == chain["synth"] / "png/a/a-0.png"
