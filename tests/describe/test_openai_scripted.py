"""The openai backend over real HTTP on loopback against a scripted OpenAI-compatible server:
retries on 429/5xx, timeouts, re-asking invalid answers, failure records, no loss on kill."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medsynth.artifacts import read_jsonl
from medsynth.describe.config import DescribeConfig
from medsynth.describe.prompts import load_template
from medsynth.describe.run import run_describe
from medsynth.errors import MedsynthError
from medsynth.mllm import RequestError
from medsynth.mllm.openai_compat import OpenAIBackend
from medsynth.store import open_store
from tests.describe.conftest import VALID, Scripted


def _cfg(ds: Path, out: Path, url: str, **kw: object) -> DescribeConfig:
    kw.setdefault("split", "all")  # every image of the fixture, not only its training split
    return DescribeConfig(dataset=str(ds), out=str(out), backend="openai", model="scripted",
                          base_url=url, **kw)  # type: ignore[arg-type]


def _backend(url: str, **kw: object) -> OpenAIBackend:
    return OpenAIBackend(url, "scripted", **kw)  # type: ignore[arg-type]


def _conv() -> object:
    return load_template("derm").conversation(np.zeros((3, 16, 16), np.uint8), "nevus", fov_mm=20)


def test_request_format_and_key_from_environment(scripted: Scripted, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    text = _backend(scripted.url).answer_one(_conv())
    assert json.loads(text.strip("`json\n")) == VALID
    body, headers = scripted.requests[0], scripted.headers[0]
    assert headers["Authorization"] == "Bearer sk-test-secret"
    assert body["model"] == "scripted" and body["messages"][0]["role"] == "system"
    image_part, text_part = body["messages"][1]["content"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "Step 1" in text_part["text"] and '"nevus"' in text_part["text"]


def test_retries_429_and_5xx_then_succeeds(scripted: Scripted) -> None:
    scripted.script = [("status", 429), ("status", 500), ("status", 503)]
    assert "diameter_mm" in _backend(scripted.url, retries=3).answer_one(_conv())
    assert len(scripted.requests) == 4


def test_gives_up_after_retries(scripted: Scripted) -> None:
    scripted.script = [("status", 500)] * 3
    with pytest.raises(RequestError, match="gave up after 3 attempts"):
        _backend(scripted.url, retries=2).answer_one(_conv())


def test_timeout_is_retried(scripted: Scripted) -> None:
    scripted.script = [("slow", 1.5, "too late")]
    assert "diameter_mm" in _backend(scripted.url, retries=1, timeout=0.5).answer_one(_conv())


def test_401_and_404_stop_with_a_clear_error(scripted: Scripted, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-shown")
    scripted.script = [("status", 401)]
    with pytest.raises(MedsynthError, match="authentication failed") as e:
        _backend(scripted.url).answer_one(_conv())
    assert "sk-never-shown" not in str(e.value)
    with pytest.raises(MedsynthError, match="not found"):
        _backend(scripted.url.replace("/v1", "/v2")).answer_one(_conv())


def test_run_reasks_invalid_answers_and_records_failures(scripted: Scripted, derm_dataset: Path,
                                                         tmp_path: Path) -> None:
    # Sequential (concurrency 1) so the script lines up with the images in order.
    scripted.script = [
        ("ok", "I think it is a lesion."),                              # img 1: no JSON ...
        ("ok", json.dumps(VALID)),                                      # ... fixed on re-ask
        ("ok", json.dumps({**VALID, "border": "wobbly"})),              # img 2: bad vocabulary x3
        ("ok", json.dumps({**VALID, "border": "wobbly"})),
        ("ok", "{not json"),
        ("ok", json.dumps({**VALID, "summary": "This is a melanoma for sure."})),  # img 3: parrot
        ("ok", json.dumps(VALID)),
    ]
    store = tmp_path / "store"
    s = run_describe(_cfg(derm_dataset, store, scripted.url, concurrency=1, max_reasks=2),
                     progress=False)
    assert (s.described, s.failed, s.errors) == (7, 1, 0)
    st = open_store(store)
    failed = st.records(status="failed")
    assert len(failed) == 1
    assert failed[0].raw.count("wobbly") == 2 and "{not json" in failed[0].raw
    assert failed[0].text == "invalid answer: the answer contains no JSON object"
    # The re-ask carries the rejected answer and the problem back to the model.
    reask = scripted.requests[1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": "I think it is a lesion."}
    assert "no JSON object" in reask[-1]["content"]
    parrot_fix = scripted.requests[6]["messages"][-1]["content"]
    assert "repeats the class label" in parrot_fix
    ok = st.records("melanoma")[0]
    assert ok.backend == "openai" and ok.model == "scripted"
    assert ok.attributes["colors"] == ["light_brown", "dark_brown"]
    assert ok.attributes["structures"] == []
    assert ok.text.endswith(VALID["summary"]) and "7.5 mm" in ok.text


def test_server_errors_are_not_recorded_and_resume_completes(scripted: Scripted,
                                                              derm_dataset: Path,
                                                              tmp_path: Path) -> None:
    store = tmp_path / "store"
    scripted.script = [("status", 500)] * 2
    s = run_describe(_cfg(derm_dataset, store, scripted.url, concurrency=1, request_retries=1),
                     progress=False)
    assert (s.described, s.errors) == (7, 1)
    s2 = run_describe(_cfg(derm_dataset, store, scripted.url, resume=True), progress=False)
    assert (s2.described, s2.skipped, s2.errors) == (1, 7, 0)
    ids = [r.image_id for r in open_store(store).records(status=None)]
    assert len(ids) == 8 == len(set(ids))


def test_concurrency_is_bounded(scripted: Scripted, derm_dataset: Path, tmp_path: Path) -> None:
    scripted.default = ("slow", 0.3, json.dumps(VALID))
    t0 = time.perf_counter()
    s = run_describe(_cfg(derm_dataset, tmp_path / "store", scripted.url, concurrency=4),
                     progress=False)
    dt = time.perf_counter() - t0
    assert s.described == 8
    assert 0.55 < dt < 2.0  # 8 slow requests, 4 at a time: about two rounds, not eight


def test_other_backend_records_are_kept(scripted: Scripted, derm_dataset: Path,
                                        tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_describe(DescribeConfig(dataset=str(derm_dataset), out=str(store), split="all"),
                 progress=False)
    run_describe(_cfg(derm_dataset, store, scripted.url), progress=False)
    st = open_store(store)
    assert len(st.records(backend="attributes")) == 8 and len(st.records(backend="openai")) == 8
    assert st.manifest.outputs["backends"] == ["attributes", "openai"]


def test_kill_mid_run_then_resume_gives_one_record_per_image(scripted: Scripted,
                                                             derm_dataset: Path,
                                                             tmp_path: Path) -> None:
    scripted.default = ("slow", 0.4, json.dumps(VALID))
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "medsynth.cli", "describe", str(derm_dataset), "--out", str(store),
           "--backend", "openai", "--model", "scripted", "--base-url", scripted.url,
           "--concurrency", "2", "--split", "all"]
    env = {**os.environ, "MEDSYNTH_NO_PROGRESS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    files = lambda: [d for f in store.glob("*/descriptions.jsonl") for d in read_jsonl(f)]  # noqa: E731
    deadline = time.time() + 60
    while time.time() < deadline and len(files()) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(files())
    assert 3 <= n_before < 8
    scripted.default = ("ok", json.dumps(VALID))
    res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"skipped {n_before}" in res.stderr
    ids = [d["image_id"] for d in files()]
    assert len(ids) == 8 == len(set(ids))
