"""The sample plan: class checks, safe folder names, CSV requests, per-image seeds and retrieval."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.errors import MedsynthError
from medsynth.generate.conditioning import (
    class_folders,
    image_seed,
    plan_samples,
    requests_from_csv,
    requests_from_options,
    shard,
)
from medsynth.generate.config import GenerateConfig

CLASSES = ["melanoma", "nevus", "basal cell carcinoma"]


def test_unknown_class_lists_valid_ones() -> None:
    with pytest.raises(MedsynthError) as e:
        requests_from_options(["../../etc"], CLASSES, 3, None)
    msg = str(e.value)
    assert "../../etc" in msg and "melanoma" in msg and "basal cell carcinoma" in msg


def test_class_options_all_repeat_and_commas() -> None:
    reqs = requests_from_options(["all"], CLASSES, 2, None)
    assert [r.cls for r in reqs] == CLASSES and all(r.n == 2 for r in reqs)
    reqs = requests_from_options(["nevus,Melanoma", "nevus"], CLASSES, 1, "p")
    assert [r.cls for r in reqs] == ["nevus", "melanoma"] and reqs[0].prompt == "p"


def test_class_folders_are_safe_and_distinct() -> None:
    odd = ["../../etc", "a b", "a_b", "A_B", "/abs", "..", "ünï"]
    folders = class_folders(odd)
    assert len(set(folders.values())) == len(odd)
    for f in folders.values():
        assert "/" not in f and "\\" not in f and f not in ("", ".", "..")
        assert not f.startswith(".")


def test_csv_requests(tmp_path: Path) -> None:
    p = tmp_path / "p.csv"
    p.write_text('class,prompt,n\nmelanoma,"dark, irregular lesion",2\nnevus,,1\nmelanoma,,1\n')
    reqs = requests_from_csv(p, CLASSES)
    assert [(r.cls, r.prompt, r.n) for r in reqs] == [
        ("melanoma", "dark, irregular lesion", 2), ("nevus", None, 1), ("melanoma", None, 1)]
    specs = plan_samples(reqs, CLASSES, base_seed=0, store=None)
    # Indices continue per class across rows: ids never repeat.
    assert [s.sample_id for s in specs] == ["melanoma-000000", "melanoma-000001", "nevus-000000",
                                            "melanoma-000002"]
    bad = tmp_path / "bad.csv"
    bad.write_text("class,prompt,n\nmelanoma,x,two\n")
    with pytest.raises(MedsynthError, match="bad.csv:2"):
        requests_from_csv(bad, CLASSES)
    bad.write_text("class,prompt,n\nglioma,x,1\n")
    with pytest.raises(MedsynthError, match="glioma"):
        requests_from_csv(bad, CLASSES)


def test_seeds_depend_only_on_class_and_index() -> None:
    a = plan_samples(requests_from_options(["melanoma"], CLASSES, 3, None), CLASSES, base_seed=5,
                     store=None)
    b = plan_samples(requests_from_options(["all"], CLASSES, 5, None), CLASSES, base_seed=5,
                     store=None)
    assert [s.seed for s in a] == [s.seed for s in b[:3]]
    assert len({s.seed for s in b}) == len(b)
    assert image_seed(5, "melanoma", 0) != image_seed(6, "melanoma", 0)


def test_retrieval_is_seeded_per_image(tmp_path: Path) -> None:
    from medsynth.artifacts import write_manifest
    from medsynth.store import open_store
    from tests.generate.conftest import DESCRIPTIONS, _store

    # The store only needs a 'data' manifest to reference.
    ds = tmp_path / "ds"
    write_manifest(ds, "data", outputs={})
    store = open_store(_store(tmp_path / "store", ds, ["melanoma", "nevus"]))
    classes = ["melanoma", "nevus"]
    full = plan_samples(requests_from_options(["all"], classes, 20, None), classes, base_seed=0,
                        store=store)
    part = plan_samples(requests_from_options(["melanoma"], classes, 20, None), classes,
                        base_seed=0, store=store)
    assert [s.description for s in full[:20]] == [s.description for s in part]
    texts = {s.description for s in full if s.cls == "melanoma"}
    assert texts == set(DESCRIPTIONS["melanoma"])  # both stored descriptions get drawn
    assert all(s.source.startswith("store:") for s in full)


def test_shards_are_disjoint_and_complete() -> None:
    specs = plan_samples(requests_from_options(["all"], CLASSES, 7, None), CLASSES, base_seed=0,
                         store=None)
    parts = [shard(specs, r, 3) for r in range(3)]
    ids = [s.sample_id for p in parts for s in p]
    assert sorted(ids) == sorted(s.sample_id for s in specs) and len(set(ids)) == len(ids)


def test_config_validation() -> None:
    from medsynth.errors import BadUsageError

    with pytest.raises(BadUsageError, match="format"):
        GenerateConfig(model="m", out="o", formats=["jpeg"])
    with pytest.raises(BadUsageError, match="sampler"):
        GenerateConfig(model="m", out="o", sampler="euler")
    with pytest.raises(BadUsageError, match="--n"):
        GenerateConfig(model="m", out="o", n=0)
    cfg = GenerateConfig(model="m", out="o", formats=["nifti", "PNG"])
    assert cfg.formats == ["png", "nifti"]


def test_stored_descriptions_come_only_from_training_splits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from medsynth.artifacts import write_manifest
    from medsynth.store import DescriptionRecord, open_store, record_writer

    with record_writer(tmp_path, "melanoma") as w:
        for i, split in enumerate(["train", "test", "test", "test"]):
            w.write(DescriptionRecord(f"m{i}", f"m{i}.png", "melanoma", split, {}, f"text {split} {i}",
                                      "attributes", "", "1", dt.datetime.now().isoformat()).to_dict())
    write_manifest(tmp_path, "describe")
    store = open_store(tmp_path)
    reqs = requests_from_options(["melanoma"], ["melanoma"], 20, None)
    specs = plan_samples(reqs, ["melanoma"], base_seed=0, store=store, splits=["train"])
    assert {s.description for s in specs} == {"text train 0"}
    unfiltered = plan_samples(reqs, ["melanoma"], base_seed=0, store=store)
    assert any("test" in s.description for s in unfiltered)
