"""The transformers judge (yes/no probabilities from next-token logits) and the openai judge
against a real `transformers serve`, both with a tiny random LLaVA built on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.artifacts import read_jsonl, read_manifest
from medsynth.judging.criteria import load_criteria
from medsynth.judging.judged import JudgeConfig, run_judge
from medsynth.judging.judges import JudgeSettings, YesNoJudge, judge_arrays, yes_no_question
from medsynth.mllm.local import TransformersBackend
from tests.describe.test_vlm import served  # noqa: F401 - the `transformers serve` fixture
from tests.judge.conftest import make_phantom_set, phantom


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom_set(tmp_path_factory.mktemp("s"), "derm", 1, size=32)


def test_yes_no_judge_reads_the_logits(tiny_llava: Path) -> None:
    crit = load_criteria("derm")
    backend = TransformersBackend(str(tiny_llava), batch_size=4)
    img = phantom("derm", "melanoma", 0, 32)[0]
    judge = YesNoJudge(crit, backend, min_mass=0.0, min_margin=0.0)
    rec = judge_arrays(judge, [img], ["melanoma"])[0]
    cc = crit.for_class("melanoma")
    probs = backend.yes_no(img, [yes_no_question(crit.validity)]
                           + [yes_no_question(c.text) for c in cc.criteria],
                           system=crit.system or "You are a careful expert reader checking "
                                                 "synthetic medical images against a checklist. "
                                                 "Judge only what is visible in the image.")
    assert rec is not None and rec.backend == "transformers" and rec.model == str(tiny_llava)
    assert rec.raw["p_yes"] == [round(p.p_yes, 5) for p in probs]
    for v, p in zip(rec.verdicts, probs[1:], strict=True):
        assert v.verdict == ("met" if p.p_yes > 0.5 else "not_met")
        assert v.confidence == pytest.approx(max(p.p_yes, 1 - p.p_yes), abs=1e-4)
    assert rec.image_valid == (probs[0].p_yes > 0.5)
    # deterministic
    assert judge_arrays(judge, [img], ["melanoma"])[0].to_dict() == rec.to_dict()
    # a random model puts little mass on yes/no: with a mass threshold it is unsure, not guessing
    strict = YesNoJudge(crit, backend, min_mass=0.999, min_margin=0.0)
    rec2 = judge_arrays(strict, [img], ["melanoma"])[0]
    assert all(v.verdict == "unsure" for v in rec2.verdicts) and rec2.score == 0.0
    assert rec2.image_valid  # unsure about validity is not 'invalid'


def test_transformers_judge_on_a_set(tiny_llava: Path, small_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "j"
    s = run_judge(JudgeConfig(synth=str(small_set), criteria="derm", out=str(out),
                              settings=JudgeSettings(backend="transformers",
                                                     model=str(tiny_llava))))
    assert (s.judged, s.errors, s.status) == (3, 0, "complete")
    recs = read_jsonl(out / "verdicts.jsonl")
    assert all(len(r["raw"]["p_yes"]) == 1 + len(r["verdicts"]) for r in recs)
    m = read_manifest(out, "judge")
    assert m.config["backend"] == "transformers" and m.outputs["backend_info"]["min_mass"] == 0.5


def test_openai_judge_against_transformers_serve(served: str, tiny_llava: Path,  # noqa: F811
                                                 small_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "j"
    settings = JudgeSettings(backend="openai", model=str(tiny_llava), base_url=served,
                             max_new_tokens=12, max_reasks=1, concurrency=2, timeout=60)
    s = run_judge(JudgeConfig(synth=str(small_set), criteria="derm", out=str(out),
                              settings=settings))
    # Real HTTP, image as data URL, schema as response_format; the random model answers
    # gibberish, so every image is re-asked once and recorded as failed with its raw answers.
    assert (s.judged, s.failed, s.errors) == (0, 3, 0)
    recs = read_jsonl(out / "verdicts.jsonl")
    assert all(r["status"] == "failed" and r["score"] == 0 and r["raw"] for r in recs)
    m = read_manifest(out, "judge")
    assert m.outputs["backend_info"]["structured_output"] in ("json_schema", "prompted")
    s2 = run_judge(JudgeConfig(synth=str(small_set), criteria="derm", out=str(out),
                               settings=settings, resume=True))
    assert (s2.skipped, s2.judged, s2.failed) == (3, 0, 0)
