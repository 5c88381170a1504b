"""The OpenAI-compatible judge over real HTTP against the scripted loopback server: schema
accepted, schema refused (422), invalid JSON, 429, 500 (a server failing mid-run), slow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsynth.artifacts import read_jsonl, read_manifest
from medsynth.judging.criteria import load_criteria
from medsynth.judging.judged import JudgeConfig, run_judge
from medsynth.judging.judges import JudgeSettings
from medsynth.mllm import BackendUnavailable
from tests.judge.conftest import make_phantom_set
from tests.scripted_openai import Scripted, serve

IDS = load_criteria("derm").for_class("nevus").ids


def answer(verdicts: dict[str, str] | None = None, valid: bool = True) -> str:
    v = {i: "met" for i in IDS} | (verdicts or {})
    return json.dumps({"image_valid": valid, "criteria": {
        i: {"verdict": v[i], "confidence": 0.9, "rationale": f"{i} looks so"} for i in IDS}})


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    with serve() as state:
        state.default = ("ok", answer())
        yield state


@pytest.fixture(scope="module")
def nevus_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom_set(tmp_path_factory.mktemp("nev"), "derm", 10, classes=["nevus"])


def cfg(synth: Path, out: Path, url: str, **kw) -> JudgeConfig:
    settings = {"backend": "openai", "model": "scripted-vlm", "base_url": url,
                "concurrency": 1, "request_retries": 0, "timeout": 10, "max_reasks": 1}
    settings.update({k: kw.pop(k) for k in list(kw) if k in settings})
    return JudgeConfig(synth=str(synth), criteria="derm", out=str(out),
                       settings=JudgeSettings(**settings), **kw)


def test_schema_accepted(scripted: Scripted, nevus_set: Path, tmp_path: Path) -> None:
    scripted.script = [("ok", answer({"small": "not_met", "pigment_network": "unsure"}))]
    s = run_judge(cfg(nevus_set, tmp_path / "j", scripted.url, limit=3))
    assert (s.judged, s.failed, s.errors) == (3, 0, 0)
    for body in scripted.requests:
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["criteria"]["required"] == IDS
        assert body["temperature"] == 0
        content = body["messages"][-1]["content"]
        assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert "symmetric" in content[-1]["text"] and "nevus" in content[-1]["text"]
    recs = read_jsonl(tmp_path / "j" / "verdicts.jsonl")
    first = next(r for r in recs if any(v["verdict"] == "unsure" for v in r["verdicts"]))
    w = {c.id: c.weight for c in load_criteria("derm").for_class("nevus").criteria}
    assert first["score"] == pytest.approx((sum(w.values()) - w["small"] - w["pigment_network"])
                                           / sum(w.values()), abs=1e-5)
    assert {r["backend"] for r in recs} == {"openai"} and {r["model"] for r in recs} == {
        "scripted-vlm"}
    assert all(r["score"] == 1.0 for r in recs if r is not first)
    assert "looks so" in first["verdicts"][0]["rationale"]


def test_schema_refused_with_422_falls_back(scripted: Scripted, nevus_set: Path,
                                            tmp_path: Path) -> None:
    scripted.schema_mode = "refuse422"
    s = run_judge(cfg(nevus_set, tmp_path / "j", scripted.url, limit=3))
    assert (s.judged, s.errors) == (3, 0)
    # refused once, then prompted JSON only
    assert scripted.with_schema == [True, False, False, False]
    m = read_manifest(tmp_path / "j", "judge")
    assert m.outputs["backend_info"]["structured_output"] == "prompted"
    assert any("response_format" in n for n in s.notices)


def test_invalid_json_is_reasked_then_recorded_failed(scripted: Scripted, nevus_set: Path,
                                                      tmp_path: Path) -> None:
    partial = json.dumps({"image_valid": True, "criteria": {"symmetric": {
        "verdict": "met", "confidence": 1, "rationale": ""}}})
    scripted.script = [("ok", "I think it is a nevus."), ("ok", answer()),  # fixed on re-ask
                       ("ok", "not json"), ("ok", partial)]  # still invalid: failed
    s = run_judge(cfg(nevus_set, tmp_path / "j", scripted.url, limit=2))
    assert (s.judged, s.failed) == (1, 1)
    recs = {r["status"]: r for r in read_jsonl(tmp_path / "j" / "verdicts.jsonl")}
    bad = recs["failed"]
    assert bad["score"] == 0 and not bad["image_valid"] and "not json" in bad["raw"]
    assert all(v["verdict"] == "unsure" for v in bad["verdicts"])
    assert "'regular_border' is a required property" in bad["verdicts"][0]["rationale"]
    # the re-ask showed the model its answer and the problem
    assert "could not be used" in scripted.requests[1]["messages"][-1]["content"]


def test_429_is_retried(scripted: Scripted, nevus_set: Path, tmp_path: Path) -> None:
    scripted.script = [("status", 429), ("status", 429)]
    s = run_judge(cfg(nevus_set, tmp_path / "j", scripted.url, limit=2, request_retries=2))
    assert (s.judged, s.errors) == (2, 0) and len(scripted.requests) == 4


def test_server_failing_mid_run_then_resume_completes_exactly(scripted: Scripted,
                                                              nevus_set: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "j"
    scripted.script = [("ok", answer())] * 2 + [("status", 500)] * 40
    with pytest.raises(BackendUnavailable, match="in a row failed"):
        run_judge(cfg(nevus_set, out, scripted.url))
    done = read_jsonl(out / "verdicts.jsonl")
    assert len(done) == 2
    m = read_manifest(out, "judge")
    assert m.outputs["status"] == "interrupted" and m.outputs["n_judged"] == 2
    scripted.script = []  # the server is back
    s = run_judge(cfg(nevus_set, out, scripted.url, resume=True))
    assert s.skipped == 2 and s.judged == 8 and s.status == "complete"
    ids = [r["sample_id"] for r in read_jsonl(out / "verdicts.jsonl")]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 10


def test_slow_answer_times_out_and_is_judged_on_resume(scripted: Scripted, nevus_set: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "j"
    scripted.script = [("slow", 3.0, answer())]
    s = run_judge(cfg(nevus_set, out, scripted.url, limit=3, timeout=1.0))
    assert (s.judged, s.errors) == (2, 1) and s.status == "incomplete"
    assert "timed out" in s.error_messages[0].lower()
    s2 = run_judge(cfg(nevus_set, out, scripted.url, limit=3, timeout=1.0, resume=True))
    assert s2.judged == 3 and s2.skipped == 2
    ids = {r["sample_id"] for r in read_jsonl(out / "verdicts.jsonl")}
    assert "nevus-000000" in ids and len(ids) == 5
