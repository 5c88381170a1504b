"""The judging core with the offline (measure) judge: in-memory images and whole sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsynth.artifacts import read_jsonl, read_manifest, walk_lineage
from medsynth.errors import MedsynthError
from medsynth.judging.criteria import load_criteria
from medsynth.judging.judged import JudgeConfig, open_judged, run_judge
from medsynth.judging.judges import (
    JudgeSettings,
    judge_arrays,
    make_judge,
    measure_values,
    select,
)
from tests.judge.conftest import make_phantom_set, phantom


def test_measure_judge_in_memory_prefers_the_own_class() -> None:
    crit = load_criteria("cxr")
    imgs, classes = [], []
    for cls in crit.classes:
        for i in range(2):
            imgs.append(phantom("cxr", cls, i, 128)[0])
            classes.append(cls)
    with make_judge(crit, JudgeSettings()) as judge:
        own = judge_arrays(judge, imgs, classes)
        others = {c: judge_arrays(judge, imgs, [c] * len(imgs)) for c in crit.classes}
    assert all(r is not None and r.ok and r.image_valid for r in own)
    for r, cls in zip(own, classes, strict=True):
        assert r.cls == cls and r.backend == "measure" and r.criteria_sha256 == crit.sha256
        assert [v.id for v in r.verdicts] == crit.for_class(cls).ids
        # unmeasurable items are unsure, never guessed
        for v in r.verdicts:
            if crit.for_class(cls).get(v.id).measure is None:
                assert v.verdict == "unsure" and v.confidence == 0.0
        assert "measured" in r.raw and "ctr" in r.raw["measured"]
    # the images of a class score higher against its checklist than against any other
    for cls in crit.classes:
        mine = [k for k, c in enumerate(classes) if c == cls]
        own_mean = np.mean([own[k].score for k in mine])
        for other in crit.classes:
            if other != cls:
                assert own_mean > np.mean([others[other][k].score for k in mine]), (cls, other)


def test_blank_and_wrong_images_are_invalid() -> None:
    crit = load_criteria("derm")
    skin = np.full((3, 64, 64), 200, np.uint8)
    gray = np.zeros((1, 64, 64), np.uint8)
    with make_judge(crit, JudgeSettings()) as judge:
        recs = judge_arrays(judge, [skin, gray], ["nevus", "nevus"], mm_per_px=20 / 64)
    for r in recs:
        assert r is not None and not r.image_valid and r.score == 0.0
    ok, _, why = measure_values("derm", skin, 20 / 64)
    assert not ok and "no skin lesion" in why


def test_judge_a_set_then_resume_exactly(tmp_path: Path, derm_set: Path) -> None:
    out = tmp_path / "judged"
    s = run_judge(JudgeConfig(synth=str(derm_set), criteria="derm", out=str(out), limit=4))
    assert s.judged == 4 and s.status == "incomplete"
    assert read_manifest(out, "judge").outputs["status"] == "incomplete"
    with pytest.raises(MedsynthError, match="already exists"):
        run_judge(JudgeConfig(synth=str(derm_set), criteria="derm", out=str(out)))
    s2 = run_judge(JudgeConfig(synth=str(derm_set), criteria="derm", out=str(out), resume=True))
    assert s2.skipped == 4 and s2.judged == 5 and s2.status == "complete"
    lines = read_jsonl(out / "verdicts.jsonl")
    assert sorted(r["sample_id"] for r in lines) == sorted(
        pd.read_csv(derm_set / "samples.csv")["sample_id"])
    # criteria copied verbatim, its hash in the manifest and every record
    crit = load_criteria("derm")
    assert (out / "criteria.yaml").read_bytes() == crit.path.read_bytes()
    m = read_manifest(out, "judge")
    assert m.config["criteria_sha256"] == crit.sha256
    assert {r["criteria_sha256"] for r in lines} == {crit.sha256}
    assert m.outputs["n_judged"] == 9 and set(m.outputs["per_class"]) == set(crit.classes)
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns[:8]) == ["sample_id", "class", "score", "image_valid", "n_met",
                                        "n_not_met", "n_unsure", "status"]
    assert set(crit.all_ids()) <= set(scores.columns)
    assert scores["sample_id"].tolist() == pd.read_csv(derm_set / "samples.csv")["sample_id"].tolist()
    # unsure -> empty cell
    assert scores["fissures"].isna().all()
    j = open_judged(out)
    assert j.complete and len(j.records) == 9 and j.source().root == derm_set
    lin = walk_lineage(out)
    assert [x.stage for x in lin.sources] == ["judge", "generate"] and lin.generator is not None
    # a third resume has nothing to do
    s3 = run_judge(JudgeConfig(synth=str(derm_set), criteria="derm", out=str(out), resume=True))
    assert s3.judged == 0 and s3.skipped == 9 and len(read_jsonl(out / "verdicts.jsonl")) == 9


def test_a_torn_last_line_is_judged_again(tmp_path: Path, cxr_set: Path) -> None:
    out = tmp_path / "j"
    run_judge(JudgeConfig(synth=str(cxr_set), criteria="cxr", out=str(out)))
    path = out / "verdicts.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])  # killed mid-write
    s = run_judge(JudgeConfig(synth=str(cxr_set), criteria="cxr", out=str(out), resume=True))
    assert s.judged == 1
    recs = read_jsonl(path)
    assert len(recs) == len(lines) and len({r["sample_id"] for r in recs}) == len(lines)
    assert json.loads(path.read_text().splitlines()[-1])["sample_id"] == json.loads(lines[-1])["sample_id"]


def test_bad_inputs(tmp_path: Path, derm_set: Path, cxr_set: Path) -> None:
    # criteria naming a class the model does not have
    with pytest.raises(MedsynthError, match=r"cxr\.yaml: class\(es\) 'normal'.* not in the model"):
        run_judge(JudgeConfig(synth=str(derm_set), criteria="cxr", out=str(tmp_path / "a")))
    # a class of the set without criteria
    own = tmp_path / "partial.yaml"
    text = load_criteria("derm").text
    own.write_text(text[:text.index("  seborrheic_keratosis:")])
    with pytest.raises(MedsynthError, match=r"partial\.yaml: no criteria for class\(es\) "
                                            "'seborrheic_keratosis'"):
        run_judge(JudgeConfig(synth=str(derm_set), criteria=str(own), out=str(tmp_path / "b")))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # resuming a judged folder with another set or other criteria
    out = tmp_path / "j"
    run_judge(JudgeConfig(synth=str(derm_set), criteria="derm", out=str(out), limit=1))
    other = make_phantom_set(tmp_path / "other", "derm", 1)
    with pytest.raises(MedsynthError, match="judges another synthetic set"):
        run_judge(JudgeConfig(synth=str(other), criteria="derm", out=str(out), resume=True))
    edited = tmp_path / "edited.yaml"
    edited.write_text(text.replace("version: 1", "version: 2"))
    with pytest.raises(MedsynthError, match="was judged with another criteria file"):
        run_judge(JudgeConfig(synth=str(derm_set), criteria=str(edited), out=str(out),
                              resume=True))


def test_a_changed_set_is_refused_by_readers(tmp_path: Path) -> None:
    synth = make_phantom_set(tmp_path / "s", "derm", 1)
    out = tmp_path / "j"
    run_judge(JudgeConfig(synth=str(synth), criteria="derm", out=str(out)))
    # another set written into the same folder
    make_phantom_set(tmp_path / "s", "derm", 2)
    with pytest.raises(MedsynthError, match="was judged on another synthetic set"):
        open_judged(out).source()


def test_select_rules(tmp_path: Path, derm_set: Path) -> None:
    out = tmp_path / "j"
    run_judge(JudgeConfig(synth=str(derm_set), criteria="derm", out=str(out)))
    recs = open_judged(out).records
    kept = select(recs, per_class_n=2)
    assert sorted(r.cls for r in kept) == sorted([c for c in load_criteria("derm").classes] * 2)
    for cls in {r.cls for r in recs}:
        mine = sorted((r.score for r in recs if r.cls == cls), reverse=True)
        assert sorted((r.score for r in kept if r.cls == cls), reverse=True) == mine[:2]
    assert all(r.score >= 0.5 for r in select(recs, min_score=0.5))
    assert len(select(recs, top_fraction=0.34)) == 3 * 2  # ceil(0.34 * 3) per class
    with pytest.raises(MedsynthError, match="fewer than --per-class-n 4"):
        select(recs, per_class_n=4)


def test_check_made_by(tmp_path: Path) -> None:
    synth = make_phantom_set(tmp_path / "a", "derm", 1)
    other = make_phantom_set(tmp_path / "b", "derm", 1)
    out = tmp_path / "j"
    run_judge(JudgeConfig(synth=str(synth), criteria="derm", out=str(out)))
    j = open_judged(out)
    assert j.check_made_by(tmp_path / "a" / "model").root == synth
    with pytest.raises(MedsynthError, match="judges images made by .*, not by"):
        j.check_made_by(other.parent / "model")


def test_a_judge_that_cannot_start_leaves_no_debris(tmp_path: Path, derm_set: Path) -> None:
    own = tmp_path / "nomeasure.yaml"
    own.write_text(load_criteria("derm").text.replace("measurer: derm", "measurer: none")
                   .replace("field_of_view_mm: 20\n", ""))
    import re

    own.write_text(re.sub(r"\n\s+measure: \{[^}]*\}", "", own.read_text()))
    out = tmp_path / "j"
    with pytest.raises(MedsynthError, match="measurer is 'none'"):
        run_judge(JudgeConfig(synth=str(derm_set), criteria=str(own), out=str(out)))
    assert not out.exists()
    with pytest.raises(MedsynthError, match="cannot load a vision-language model"):
        run_judge(JudgeConfig(synth=str(derm_set), criteria="derm", out=str(out),
                              settings=JudgeSettings(backend="transformers",
                                                     model=str(tmp_path / "no-model"))))
    assert not out.exists()
