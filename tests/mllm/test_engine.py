"""The ask -> validate -> re-ask engine with in-process backends that follow the protocol: bounded
re-asks, raw answers kept, errors, concurrency bounds, stopping when a server is down; the
offline measure backend (no re-asks, process pool); validators, resume keys, prompt files."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medsynth.errors import MedsynthError
from medsynth.mllm import (
    Backend,
    BackendUnavailable,
    Checked,
    Engine,
    JsonAnswer,
    Request,
    RequestError,
    RunKey,
    TextAnswer,
    extract_json,
    finished,
    measure_backend,
)
from medsynth.mllm.templates import PromptTemplate, fill, load_prompt_template


class Canned:
    """A backend that answers from a per-item list (the item's id is the request's user text)
    and records what it was asked and how many calls ran at once."""

    name, model, writes_text = "canned", "canned-1", True

    def __init__(self, answers: dict[str, list[Any]], *, batch_size: int = 1, workers: int = 1,
                 delay: float = 0.0, can_revise: bool = True) -> None:
        self.answers, self.batch_size, self.workers = answers, batch_size, workers
        self.delay, self.can_revise = delay, can_revise
        self.calls: list[list[str]] = []
        self.turns: dict[str, int] = {}
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def answer(self, requests: Sequence[Request]) -> list[str | RequestError]:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.calls.append([r.user for r in requests])
        time.sleep(self.delay)
        out: list[str | RequestError] = []
        for r in requests:
            self.turns[r.user] = len(r.turns)
            a = self.answers[r.user].pop(0)
            out.append(RequestError(a[1]) if isinstance(a, tuple) else a)
        with self.lock:
            self.active -= 1
        return out

    def info(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}},
          "required": ["n"]}


def _run(backend: Canned, items: list[str], **kw: Any) -> dict[str, Any]:
    engine = Engine(backend, **kw)
    return {o.item: o for o in engine.run(items, lambda i: Request(user=i), JsonAnswer(SCHEMA))}


def test_protocol_is_checked() -> None:
    assert isinstance(Canned({}), Backend)
    with pytest.raises(TypeError, match="Backend protocol"):
        Engine(object())  # type: ignore[arg-type]


def test_reasks_are_bounded_and_every_raw_answer_is_kept() -> None:
    b = Canned({"a": ['{"n": 1}'],
                "b": ["none", '{"n": -1}', '{"n": 2}'],
                "c": ["x", "y", "z", "never asked"],
                "d": [("error", "HTTP 500")]})
    out = _run(b, ["a", "b", "c", "d"], max_reasks=2)
    assert (out["a"].status, out["a"].value, out["a"].answers) == ("ok", {"n": 1}, ['{"n": 1}'])
    assert out["b"].status == "ok" and out["b"].value == {"n": 2}
    assert out["b"].answers == ["none", '{"n": -1}', '{"n": 2}'] and b.turns["b"] == 4
    assert out["c"].status == "failed" and out["c"].answers == ["x", "y", "z"]
    assert out["c"].problems == ["the answer contains no JSON object"]
    assert out["c"].raw.count("re-asked") == 2 and b.answers["c"] == ["never asked"]
    assert out["d"].status == "error" and out["d"].error == "HTTP 500"


def test_batches_reask_together_and_keep_order_within_a_batch() -> None:
    b = Canned({"a": ["bad", '{"n": 1}'], "b": ['{"n": 2}'], "c": ["bad", '{"n": 3}']},
               batch_size=3)
    out = _run(b, ["a", "b", "c"], max_reasks=1)
    assert {k: o.value for k, o in out.items()} == {"a": {"n": 1}, "b": {"n": 2}, "c": {"n": 3}}
    assert b.calls == [["a", "b", "c"], ["a", "c"]]  # the re-ask round holds only the invalid


def test_backends_that_cannot_revise_are_not_reasked() -> None:
    b = Canned({"a": ['{"n": -5}', "unused"]}, can_revise=False)
    out = _run(b, ["a"], max_reasks=3)
    assert out["a"].status == "failed" and out["a"].answers == ['{"n": -5}']
    assert "'n': -5 is less than the minimum of 0" in out["a"].problems[0]


def test_concurrency_is_bounded_by_the_backend() -> None:
    items = [f"i{k}" for k in range(12)]
    b = Canned({i: ['{"n": 0}'] for i in items}, workers=3, delay=0.15)
    t0 = time.perf_counter()
    out = _run(b, items)
    dt = time.perf_counter() - t0
    assert len(out) == 12 and all(o.status == "ok" for o in out.values())
    assert b.peak == 3 and 0.5 < dt < 2.5  # 12 calls, 3 at a time: 4 rounds of 0.15 s


def test_a_dead_server_stops_the_run_and_items_are_consumed_lazily() -> None:
    consumed: list[str] = []

    def items() -> Any:
        for k in range(1000):
            consumed.append(f"i{k}")
            yield f"i{k}"

    b = Canned({f"i{k}": [("error", "connection refused")] for k in range(1000)}, workers=2)
    seen = []
    with pytest.raises(BackendUnavailable, match="5 requests in a row failed") as e:
        for o in Engine(b, max_consecutive_errors=5).run(items(), lambda i: Request(user=i),
                                                          JsonAnswer(SCHEMA)):
            seen.append(o.status)
    assert "connection refused" in str(e.value) and "--resume" in (e.value.hint or "")
    assert seen[:5] == ["error"] * 5 and len(consumed) < 20


def test_one_success_resets_the_error_count() -> None:
    seq = [("error", "e")] * 3 + ['{"n": 1}'] + [("error", "e")] * 3
    b = Canned({f"i{k}": [a] for k, a in enumerate(seq)})
    out = _run(b, [f"i{k}" for k in range(len(seq))], max_consecutive_errors=4)
    assert [out[f"i{k}"].status for k in range(len(seq))].count("error") == 6


def test_ask_one_request() -> None:
    b = Canned({"q": ["Findings: none.", "A clear chest radiograph."]})
    check = TextAnswer(min_chars=20, forbidden=("findings: none",))
    req = Request(user="q", reask_hint="Answer again in one sentence.")
    out = Engine(b, max_reasks=1).ask(req, check)
    assert out.status == "ok" and out.value == "A clear chest radiograph."
    assert req.turns[-1][1].endswith("Answer again in one sentence.")


@pytest.mark.parametrize("processes", [1, 2])
def test_measure_backend_answers_json_like_a_model(processes: int) -> None:
    b = measure_backend(_count_bright, name="counter", processes=processes)
    assert isinstance(b, Backend) and not b.can_revise and not b.writes_text
    imgs = {f"img{k}": np.full((1, 4, 4), k, np.uint8) for k in range(40)}
    try:
        out = {o.item: o for o in Engine(b, max_reasks=2).run(
            list(imgs), lambda i: Request(user="", images=[imgs[i]], context={"min": 20}),
            JsonAnswer(SCHEMA))}
    finally:
        b.close()
    assert all(o.status == "ok" for o in out.values())
    assert [out[f"img{k}"].value["n"] for k in range(40)] == [16 * (k >= 20) for k in range(40)]
    assert b.name == "counter" and b.model.startswith("medsynth.measure/")


def _count_bright(req: Request) -> dict[str, Any]:
    """Module level: measurers must pickle (they run in worker processes)."""
    return {"n": np.int64((req.images[0] >= req.context["min"]).sum())}


def test_json_schema_checks_a_judge_like_answer() -> None:
    # The shape the judge will use: one entry per criterion id, every id required.
    ids = ["asymmetry", "colours"]
    verdict = {"type": "object", "properties": {
        "verdict": {"enum": ["met", "not_met", "unsure"]}, "rationale": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["verdict", "rationale", "confidence"], "additionalProperties": False}
    schema = {"type": "object", "properties": {
        "image_valid": {"type": "boolean"},
        "criteria": {"type": "object", "properties": dict.fromkeys(ids, verdict),
                     "required": ids, "additionalProperties": False}},
        "required": ["image_valid", "criteria"], "additionalProperties": False}
    v = {"verdict": "met", "rationale": "two axes", "confidence": 0.9}
    check = JsonAnswer(schema, extra=lambda obj, label: [
        f"rationale of {k} names the class" for k, c in obj["criteria"].items()
        if label in c["rationale"]])
    ok = check(json.dumps({"image_valid": True, "criteria": {"asymmetry": v, "colours": v}}),
               "melanoma")
    assert ok.ok and ok.value["criteria"]["colours"]["verdict"] == "met"
    missing = check(json.dumps({"image_valid": True, "criteria": {"asymmetry": v}}), "x")
    assert missing.problems == ["'criteria': 'colours' is a required property"]
    wrong = check('{"image_valid": "yes", "criteria": {"asymmetry": {"verdict": "maybe"}}}', "x")
    assert len(wrong.problems) >= 3 and any("'image_valid'" in p for p in wrong.problems)
    named = check(json.dumps({"image_valid": True, "criteria": {
        "asymmetry": {**v, "rationale": "a melanoma"}, "colours": v}}), "melanoma")
    assert named.problems == ["rationale of asymmetry names the class"]
    from jsonschema.exceptions import SchemaError

    with pytest.raises(SchemaError):
        JsonAnswer({"type": "no-such-type"})


def test_extract_json_and_checked() -> None:
    assert extract_json('think... ```json\n{"a": 1}\n``` done') == {"a": 1}
    assert extract_json("nothing") is None
    assert Checked().ok and not Checked(problems=["x"]).ok


def test_resume_keys() -> None:
    recs = [{"image_id": "a", "backend": "openai", "model": "m", "template_version": "t@1+aa"},
            {"image_id": "b", "backend": "openai", "model": "m", "template_version": "t@1+bb"},
            {"image_id": "c", "backend": "attributes", "model": "m", "template_version": "t@1+aa"}]
    key = RunKey("openai", "m", "t@1+aa")
    assert finished(recs, key) == {"a"}
    assert RunKey.of(recs[1]) == RunKey("openai", "m", "t@1+bb")
    judged = [{"sample_id": "s1", "backend": "measure", "model": "x", "criteria_version": "c@1"}]
    assert finished(judged, RunKey("measure", "x", "c@1"), id_field="sample_id",
                    version_field="criteria_version") == {"s1"}


def test_prompt_templates(tmp_path: Path) -> None:
    assert fill("{a} and {schema}", {"a": 1}) == "1 and {schema}"
    p = tmp_path / "report.yaml"
    p.write_text('name: cxr_report\nversion: "1"\nsystem: You write radiology reports.\n'
                 "user: 'Class {cls}; attributes {attributes}. Write FINDINGS and IMPRESSION.'\n")
    t = load_prompt_template(p)
    assert t.full_version.startswith("cxr_report@1+") and len(t.digest) == 64
    req = t.request(cls="effusion", attributes="left, lower")
    assert req.user == "Class effusion; attributes left, lower. Write FINDINGS and IMPRESSION."
    assert req.images == [] and req.openai_messages()[1] == {"role": "user", "content": req.user}
    p.write_text(p.read_text() + "# edited\n")
    assert load_prompt_template(p).full_version != t.full_version
    assert PromptTemplate("x", "2", "", "u").full_version == "x@2"
    p.write_text("name: x\n")
    with pytest.raises(MedsynthError, match="missing"):
        load_prompt_template(p)
