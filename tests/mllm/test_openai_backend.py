"""The OpenAI-compatible backend (openai SDK) over real HTTP against the scripted server:
structured outputs accepted, refused (422, 400) and remembered; Retry-After; the API key never
leaves the Authorization header (logs, records, manifests, answers, errors)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from medsynth.describe.config import DescribeConfig
from medsynth.describe.prompts import load_template
from medsynth.describe.run import run_describe
from medsynth.errors import MedsynthError
from medsynth.mllm import Engine, JsonAnswer, Request, RequestError
from medsynth.mllm.openai_compat import REDACTED, OpenAIBackend
from tests.describe.conftest import make_derm_dataset
from tests.scripted_openai import VALID, Scripted

SECRET = "sk-medsynth-test-0123456789abcdef"
SCHEMA = {"type": "object", "properties": {"verdict": {"enum": ["met", "not_met"]}},
          "required": ["verdict"], "additionalProperties": False}


def _req(schema: dict | None = SCHEMA) -> Request:
    return Request(user="Is it? Answer as JSON.", system="Be brief.",
                   images=[np.zeros((3, 8, 8), np.uint8)], schema=schema, schema_name="verdict")


def test_schema_accepted_is_sent_every_time(scripted: Scripted) -> None:
    b = OpenAIBackend(scripted.url, "scripted")
    assert b.structured_output == "untried"
    for _ in range(2):
        b.answer_one(_req())
    assert scripted.with_schema == [True, True]
    rf = scripted.requests[0]["response_format"]
    assert rf == {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}
    assert b.structured_output == "json_schema" and b.info()["structured_output"] == "json_schema"
    b.answer_one(_req(schema=None))  # a request without a schema goes without one
    assert scripted.with_schema[-1] is False


@pytest.mark.parametrize("mode", ["refuse422", "refuse400"])
def test_schema_refused_falls_back_and_is_remembered(scripted: Scripted, mode: str) -> None:
    scripted.schema_mode = mode
    b = OpenAIBackend(scripted.url, "scripted")
    first = b.answer_one(_req())
    assert json.loads(first.strip("`json\n")) == VALID  # the answer of the resent request
    assert scripted.with_schema == [True, False]
    b.answer_one(_req())
    b.answer_one(_req())
    # Remembered per backend instance: no more refused attempts.
    assert scripted.with_schema == [True, False, False, False]
    assert b.structured_output == "prompted"
    assert len(b.notices) == 1 and "refused the JSON schema" in b.notices[0]
    # A new instance tries again (the fallback belongs to the instance, not the process).
    OpenAIBackend(scripted.url, "scripted").answer_one(_req())
    assert scripted.with_schema[-2:] == [True, False]


def test_structured_output_off_never_sends_the_schema(scripted: Scripted) -> None:
    b = OpenAIBackend(scripted.url, "scripted", structured_output="off")
    b.answer_one(_req())
    assert scripted.with_schema == [False] and b.structured_output == "prompted"


def test_refusal_without_a_schema_is_a_request_error(scripted: Scripted) -> None:
    scripted.script = [("status", 422)]
    with pytest.raises(RequestError, match="HTTP 422"):
        OpenAIBackend(scripted.url, "scripted").answer_one(_req(schema=None))


def test_retry_after_is_honoured(scripted: Scripted) -> None:
    scripted.script = [("retry_after", 1.2)]
    t0 = time.monotonic()
    OpenAIBackend(scripted.url, "scripted", retries=2).answer_one(_req())
    assert len(scripted.requests) == 2
    # The SDK's own first backoff is at most 0.5 s: waiting 1.2 s means Retry-After was read.
    assert scripted.times[1] - scripted.times[0] >= 1.15
    assert time.monotonic() - t0 < 10


def test_engine_reasks_through_the_server(scripted: Scripted) -> None:
    scripted.script = [("ok", "no json here"), ("ok", '{"verdict": "maybe"}'),
                       ("ok", '{"verdict": "met"}')]
    out = Engine(OpenAIBackend(scripted.url, "scripted"), max_reasks=2).ask(_req(), JsonAnswer(SCHEMA))
    assert out.status == "ok" and out.value == {"verdict": "met"}
    assert out.answers == ["no json here", '{"verdict": "maybe"}', '{"verdict": "met"}']
    last = scripted.requests[-1]["messages"]
    assert last[-2] == {"role": "assistant", "content": '{"verdict": "maybe"}'}
    assert "'verdict'" in last[-1]["content"] and "is not one of" in last[-1]["content"]


def test_api_key_is_sent_but_never_kept(scripted: Scripted, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MEDSYNTH_OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_LOG", "debug")
    caplog.set_level(logging.DEBUG)
    ds = make_derm_dataset(tmp_path / "derm", n_per_class=2, size=32)
    store = tmp_path / "store"
    # The server echoes the Authorization header in answers (the JSON after the echo still
    # parses), in a response header and in an error message.
    scripted.script = [("echo_key",), ("echo_key_error", 500), ("ok", json.dumps(VALID)),
                       ("echo_key",), ("echo_key",)]
    s = run_describe(DescribeConfig(dataset=str(ds), out=str(store), backend="openai",
                                    model="scripted", base_url=scripted.url, concurrency=1,
                                    request_retries=1, split="all"), progress=False)
    assert s.described == 4
    assert all(str(h["Authorization"]) == f"Bearer {SECRET}" for h in scripted.headers)
    files = [p for p in store.rglob("*") if p.is_file()]
    assert files and not any(SECRET in p.read_text("utf-8", "replace") for p in files)
    assert SECRET not in caplog.text
    # What the server echoed back arrives redacted.
    b = OpenAIBackend(scripted.url, "scripted")
    scripted.script = [("echo_key",)]
    assert SECRET not in (ans := b.answer_one(_req())) and REDACTED in ans
    scripted.script = [("echo_key_error", 401)]
    with pytest.raises(MedsynthError) as e:
        b.answer_one(_req())
    assert SECRET not in str(e.value) and REDACTED in str(e.value)
    scripted.script = [("echo_key_error", 500)] * 2
    with pytest.raises(RequestError) as e2:
        OpenAIBackend(scripted.url, "scripted", retries=1).answer_one(_req())
    assert SECRET not in str(e2.value) and REDACTED in str(e2.value)
    assert SECRET not in json.dumps(b.info())
    assert SECRET not in caplog.text


def test_real_prompt_carries_the_template_schema(scripted: Scripted) -> None:
    t = load_template("derm")
    req = t.conversation(np.zeros((3, 16, 16), np.uint8), "nevus", fov_mm=20)
    OpenAIBackend(scripted.url, "scripted").answer_one(req)
    schema = scripted.requests[0]["response_format"]["json_schema"]["schema"]
    assert schema == t.schema.json_schema()
    assert schema["required"] == [*t.schema.names, "summary"]
