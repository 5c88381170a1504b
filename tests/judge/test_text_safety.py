"""Any Unicode in a judge's answer survives verdicts.jsonl: written, read, resumed."""

from __future__ import annotations

import json
from pathlib import Path

from medsynth.judging.judged import run_judge
from medsynth.judging.judges import VERDICTS_NAME
from tests.generate.test_text_safety import ODD
from tests.judge.test_openai_judge import IDS, cfg, nevus_set, scripted  # noqa: F401 (fixtures)
from tests.scripted_openai import Scripted


def test_verdicts_keep_line_separators_nul_and_bom(scripted: Scripted,  # noqa: F811
                                                   nevus_set: Path,  # noqa: F811
                                                   tmp_path: Path) -> None:
    text = json.dumps({"image_valid": True, "criteria": {
        i: {"verdict": "met", "confidence": 0.9, "rationale": ODD} for i in IDS}},
        ensure_ascii=False)  # the raw characters on the wire
    scripted.default = ("ok", text)
    out = tmp_path / "j"
    s = run_judge(cfg(nevus_set, out, scripted.url, limit=3))
    assert (s.judged, s.failed, s.errors) == (3, 0, 0)
    lines = (out / VERDICTS_NAME).read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[-1] == b""  # one line per record
    recs = [json.loads(x) for x in lines[:-1]]
    shown = " ".join(ODD.split())  # the rationale is shown on one line; the raw answer kept
    assert all(v["rationale"] == shown for r in recs for v in r["verdicts"])
    assert all(r["raw"] == text for r in recs)
    s2 = run_judge(cfg(nevus_set, out, scripted.url, limit=3, resume=True))
    assert (s2.skipped, s2.errors) == (3, 0)  # the three read back, three more judged
    assert (out / VERDICTS_NAME).read_bytes().count(b"\n") == 6
