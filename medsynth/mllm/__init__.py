"""The shared MLLM engine: backends behind one protocol, and the ask -> validate -> re-ask loop.

Used by ``describe`` (visual attributes per image), and built for the judge (verdicts against
criteria) and the report writer. Nothing here knows about a stage.

* :mod:`~medsynth.mllm.request`: :class:`Request` (system, user text, images, re-ask turns,
  answer schema) and the 8-bit display copies of images.
* :mod:`~medsynth.mllm.backend`: the :class:`Backend` protocol, :class:`RequestError`,
  :class:`BackendConfig` and :func:`make_backend`; implementations in
  :mod:`~medsynth.mllm.openai_compat` (any OpenAI-compatible server, via the ``openai`` SDK),
  :mod:`~medsynth.mllm.local` (a local transformers model, with yes/no probabilities) and
  :mod:`~medsynth.mllm.measure` (offline, answers from pixel measurements).
* :mod:`~medsynth.mllm.validate`: JSON extraction, JSON Schema and free-text checks.
* :mod:`~medsynth.mllm.engine`: :class:`Engine` (bounded re-asks, raw answers kept,
  concurrency, stop when the server is down).
* :mod:`~medsynth.mllm.resume`: :class:`RunKey` (backend, model, prompt version).
* :mod:`~medsynth.mllm.templates`: prompt files, placeholders and content versions.

Heavy libraries (openai, transformers, torch, jsonschema) are imported only when used.
"""

from __future__ import annotations

from medsynth.mllm.backend import (
    Backend,
    BackendConfig,
    BackendUnavailable,
    RequestError,
    make_backend,
    measure_backend,
)
from medsynth.mllm.engine import REASK_SEPARATOR, Engine, Outcome
from medsynth.mllm.request import Request
from medsynth.mllm.resume import RunKey, finished
from medsynth.mllm.validate import Checked, JsonAnswer, TextAnswer, extract_json

__all__ = ["REASK_SEPARATOR", "Backend", "BackendConfig", "BackendUnavailable", "Checked",
           "Engine", "JsonAnswer", "Outcome", "Request", "RequestError", "RunKey", "TextAnswer",
           "extract_json", "finished", "make_backend", "measure_backend"]
