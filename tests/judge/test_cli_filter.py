"""`medsynth judge`, `judge show` and `judge filter` as a user calls them; the filtered set is a
synthetic set with lineage through the judged folder, read by evaluate like any other."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.artifacts import read_manifest, walk_lineage
from medsynth.cli import app
from medsynth.synthset import open_synthetic
from tests.judge.conftest import make_phantom_set

runner = CliRunner()


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli")
    synth = make_phantom_set(base, "derm", 4)
    out = base / "judged"
    r = runner.invoke(app, ["judge", str(synth), "--criteria", "derm", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "melanoma: 4 judged" in r.output and "nevus: 4 judged" in r.output
    return {"base": base, "synth": synth, "judged": out}


def test_show(judged: dict[str, Path]) -> None:
    r = runner.invoke(app, ["judge", "show", str(judged["judged"]), "--n", "2"])
    assert r.exit_code == 0, r.output
    for cls in ("melanoma", "nevus", "seborrheic_keratosis"):
        assert cls in r.output
    assert "worst" in r.output and "best" in r.output and "score mean" in r.output
    assert "fissures" in r.output and "unsure" in r.output  # not measurable offline
    r = runner.invoke(app, ["judge", "show", str(judged["judged"]), "--class", "nevus"])
    assert r.exit_code == 0 and "melanoma" not in r.output


def test_show_calls_a_truncated_verdicts_file_incomplete(judged: dict[str, Path],
                                                         tmp_path: Path) -> None:
    import shutil

    cut = tmp_path / "judged"
    shutil.copytree(judged["judged"], cut)
    lines = (cut / "verdicts.jsonl").read_bytes().split(b"\n")
    (cut / "verdicts.jsonl").write_bytes(b"\n".join(lines[:-3]) + b"\n")  # two records lost
    r = runner.invoke(app, ["judge", "show", str(cut)])
    assert r.exit_code == 0, r.output
    assert "incomplete" in r.output and "complete ·" not in r.output
    r = runner.invoke(app, ["judge", "show", str(judged["judged"])])
    assert "complete ·" in r.output and "incomplete" not in r.output


def test_filter_writes_a_synthetic_set_with_lineage(judged: dict[str, Path]) -> None:
    from medsynth.evaluate.inputs import load_synthetic, open_inputs

    out = judged["base"] / "best"
    r = runner.invoke(app, ["judge", "filter", str(judged["judged"]), "--per-class-n", "2",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "kept 6 image(s)" in r.output
    s = open_synthetic(out)
    assert s.table.groupby("class").size().to_dict() == {
        "melanoma": 2, "nevus": 2, "seborrheic_keratosis": 2}
    scores = pd.read_csv(judged["judged"] / "scores.csv").set_index("sample_id")
    for cls, g in scores.groupby("class"):
        kept = s.table[s.table["class"] == cls]["sample_id"]
        assert sorted(scores.loc[kept, "score"], reverse=True) == \
            sorted(g["score"], reverse=True)[:2]
    # hard links, same relative paths
    row = s.table.iloc[0]
    assert os.path.samefile(out / row["png"], judged["synth"] / row["png"])
    m = read_manifest(out)
    assert m.stage == "judge" and m.outputs["synthetic"] and m.outputs["filtered"]
    assert [i["stage"] for i in m.inputs] == ["judge", "generate"]
    lin = walk_lineage(out)
    assert [x.folder.name for x in lin.sources] == ["best", "judged", "synth"]
    assert lin.generator.folder.name == "model" and not lin.problems
    real, sets, warnings = open_inputs(judged["base"] / "data", [out], False)
    assert sets[0].root == out
    assert len(load_synthetic(sets[0], 32, real.classes).y) == 6
    # a filtered set is judged again like any set
    again = judged["base"] / "judged2"
    r = runner.invoke(app, ["judge", str(out), "--criteria", "derm", "--out", str(again)])
    assert r.exit_code == 0, r.output
    assert walk_lineage(again).generator.folder.name == "model"
    # top fraction and min score
    r = runner.invoke(app, ["judge", "filter", str(judged["judged"]), "--top-fraction", "0.5",
                            "--min-score", "0.01", "--out", str(judged["base"] / "half"),
                            "--copy"])
    assert r.exit_code == 0, r.output
    half = open_synthetic(judged["base"] / "half")
    assert (half.table.groupby("class").size() <= 2).all()
    assert not os.path.samefile(judged["base"] / "half" / half.table.iloc[0]["png"],
                                judged["synth"] / half.table.iloc[0]["png"])


def test_bad_input(judged: dict[str, Path], tmp_path: Path) -> None:
    j = str(judged["judged"])
    r = runner.invoke(app, ["judge", "filter", j, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--min-score" in r.output
    r = runner.invoke(app, ["judge", "filter", j, "--top-fraction", "1.5", "--out",
                            str(tmp_path / "x")])
    assert r.exit_code == 2
    r = runner.invoke(app, ["judge", "filter", j, "--per-class-n", "9", "--out",
                            str(tmp_path / "x")])
    assert r.exit_code == 1 and "fewer than --per-class-n 9" in r.output
    assert not (tmp_path / "x").exists()
    # criteria naming classes the model does not have
    r = runner.invoke(app, ["judge", str(judged["synth"]), "--criteria", "cxr", "--out",
                            str(tmp_path / "y")])
    assert r.exit_code == 1 and "cxr.yaml: class(es) 'normal'" in r.output
    # a criterion without text
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nclasses:\n  nevus:\n    - {id: a, text: ''}\n")
    r = runner.invoke(app, ["judge", str(judged["synth"]), "--criteria", str(bad), "--out",
                            str(tmp_path / "z")])
    assert r.exit_code == 1 and f"{bad}: class 'nevus', criterion 'a': has no text" in r.output
    assert len(r.output.strip().splitlines()) == 2  # the error and its hint
    # a judged folder is not a synthetic set, a set is not a judged folder
    r = runner.invoke(app, ["judge", j, "--criteria", "derm", "--out", str(tmp_path / "w")])
    assert r.exit_code == 1 and "expected a synthetic set" in r.output
    r = runner.invoke(app, ["judge", "show", str(judged["synth"])])
    assert r.exit_code == 1 and "expected 'judge'" in r.output


def test_filter_refuses_a_changed_set_and_an_incomplete_judgement(tmp_path: Path) -> None:
    synth = make_phantom_set(tmp_path, "derm", 2)
    part = tmp_path / "part"
    r = runner.invoke(app, ["judge", str(synth), "--criteria", "derm", "--out", str(part),
                            "--limit", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["judge", "filter", str(part), "--min-score", "0", "--out",
                            str(tmp_path / "f")])
    assert r.exit_code == 1 and "judging is incomplete" in r.output
    full = tmp_path / "full"
    assert runner.invoke(app, ["judge", str(synth), "--criteria", "derm", "--out",
                               str(full)]).exit_code == 0
    make_phantom_set(tmp_path, "derm", 3)  # another set written over the judged one
    r = runner.invoke(app, ["judge", "filter", str(full), "--min-score", "0", "--out",
                            str(tmp_path / "f")])
    assert r.exit_code == 1 and "was judged on another synthetic set" in r.output


def test_per_request_keeps_the_best_candidate_of_each_request(tmp_path: Path) -> None:
    synth = make_phantom_set(tmp_path, "derm", 6, oversample=3)
    j = tmp_path / "j"
    assert runner.invoke(app, ["judge", str(synth), "--criteria", "derm", "--out",
                               str(j)]).exit_code == 0
    out = tmp_path / "best"
    r = runner.invoke(app, ["judge", "filter", str(j), "--per-request", "--out", str(out)])
    assert r.exit_code == 0, r.output
    kept = open_synthetic(out).table
    assert kept.groupby("class").size().to_dict() == {
        "melanoma": 2, "nevus": 2, "seborrheic_keratosis": 2}
    assert sorted(kept.groupby("class")["request"].apply(sorted).sum()) == [0, 0, 0, 1, 1, 1]
    scores = pd.read_csv(j / "scores.csv").set_index("sample_id")
    src = pd.read_csv(synth / "samples.csv").set_index("sample_id")
    for sid in kept["sample_id"]:
        same = src[(src["class"] == src.loc[sid, "class"])
                   & (src["request"] == src.loc[sid, "request"])].index
        assert scores.loc[sid, "score"] == scores.loc[same, "score"].max()
    # a set without the request column (made before generate --oversample existed)
    plain = make_phantom_set(tmp_path / "p", "derm", 1)
    t = pd.read_csv(plain / "samples.csv")
    t.drop(columns=["request", "oversample"]).to_csv(plain / "samples.csv", index=False)
    r = runner.invoke(app, ["judge", str(plain), "--criteria", "derm", "--out",
                            str(tmp_path / "pj")])
    r = runner.invoke(app, ["judge", "filter", str(tmp_path / "pj"), "--per-request", "--out",
                            str(tmp_path / "pf")])
    assert r.exit_code == 1 and "--per-request needs it" in r.output


def test_per_request_can_leave_out_requests_without_a_valid_candidate(tmp_path: Path) -> None:
    synth = make_phantom_set(tmp_path, "derm", 6, oversample=3)
    j = tmp_path / "j"
    assert runner.invoke(app, ["judge", str(synth), "--criteria", "derm", "--out",
                               str(j)]).exit_code == 0
    scores = pd.read_csv(j / "scores.csv").set_index("sample_id")
    src = pd.read_csv(synth / "samples.csv").set_index("sample_id")
    best = scores.join(src[["request"]]).groupby(["class", "request"])["score"].max()
    # a threshold some requests reach and others do not
    levels = sorted(set(best.round(6)))
    assert len(levels) > 1, best
    cut = (levels[0] + levels[1]) / 2
    want = best[best >= cut]
    assert 0 < len(want) < len(best)
    args = ["judge", "filter", str(j), "--per-request", "--min-score", f"{cut:.9f}"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "refused")])
    assert r.exit_code == 1 and "have no eligible candidate" in r.output
    assert "--skip-empty-requests" in r.output and not (tmp_path / "refused").exists()
    out = tmp_path / "kept"
    r = runner.invoke(app, [*args, "--skip-empty-requests", "--out", str(out)])
    assert r.exit_code == 0, r.output
    kept = open_synthetic(out).table
    assert sorted(zip(kept["class"], kept["request"], strict=True)) == sorted(want.index)
    missing = (best < cut).groupby(level=0).sum()
    left = {c: int(n) for c, n in missing.items() if n}
    assert read_manifest(out).outputs["empty_requests"] == left
    assert f"left out {sum(left.values())} request(s)" in r.output
    r = runner.invoke(app, ["judge", "filter", str(j), "--top-fraction", "0.5",
                            "--skip-empty-requests", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "goes with --per-request" in r.output


def test_empty_filter_hint_never_suggests_the_option_given() -> None:
    from types import SimpleNamespace

    from medsynth.judge.filter import FilterConfig, _empty_hint

    ok = [SimpleNamespace(ok=True, image_valid=True)]
    hint = _empty_hint(FilterConfig("j", "o", min_score=0.9, top_fraction=0.5), ok)
    assert "--top-fraction" not in hint and "lower --min-score" in hint
    assert "--per-class-n N" in hint
    hint = _empty_hint(FilterConfig("j", "o", min_score=0.9, per_class_n=3), ok)
    assert "--per-class-n" not in hint and "--top-fraction F" in hint
    invalid = [SimpleNamespace(ok=True, image_valid=False)]
    assert "real-features" in _empty_hint(FilterConfig("j", "o", top_fraction=0.5), invalid)
