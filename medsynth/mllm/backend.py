"""The one protocol every backend follows, its errors, and the factory that builds one.

A backend turns requests into raw answers (text). It does not validate, re-ask or record:
:class:`~medsynth.mllm.engine.Engine` does, the same way for every backend. What differs
between backends is declared, never inferred from a name:

* ``batch_size`` and ``workers``: how the engine feeds it (one request per HTTP call with
  several calls in flight; a batch per forward pass; a batch per worker process);
* ``writes_text``: whether its answers contain free text the model wrote (a measuring backend's
  do not, so users do not demand a summary or a rationale from it);
* ``can_revise``: whether sending an invalid answer back can change it (a measurement cannot,
  so the engine does not re-ask).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from medsynth.errors import BadUsageError, MedsynthError

if TYPE_CHECKING:
    from medsynth.mllm.request import Request

KINDS = ("openai", "transformers", "measure")
STRUCTURED_OUTPUT = ("auto", "off")


class RequestError(Exception):
    """One request failed for good (retries exhausted, server error): the item gets no answer,
    nothing is recorded for it, and a resumed run asks again."""


class BackendUnavailable(MedsynthError):
    """Too many requests in a row failed: the server is down or refuses everything."""


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a backend."""

    name: str
    """Recorded with every answer (e.g. ``openai``, ``transformers``, ``attributes``)."""
    model: str
    """Recorded with every answer: the model name, path or measurement version."""
    batch_size: int
    """Requests per :meth:`answer` call."""
    workers: int
    """:meth:`answer` calls the engine keeps in flight at once (threads)."""
    writes_text: bool
    """Answers contain text the model wrote (summaries, rationales)."""
    can_revise: bool
    """A re-ask (the rejected answer and its problems sent back) can change the answer."""

    def answer(self, requests: Sequence[Request]) -> list[str | RequestError]:
        """One raw answer (or the error of that request) per request, in order."""
        ...

    def info(self) -> dict[str, Any]:
        """Settings worth recording in a manifest (never a secret)."""
        ...

    def close(self) -> None:
        """Release models, pools and connections."""
        ...


@dataclasses.dataclass
class BackendConfig:
    """How to build a model backend (``measure`` backends are built from a measurer instead)."""

    kind: str
    """``openai`` (any OpenAI-compatible server) or ``transformers`` (a local model)."""
    model: str
    """Model name (openai) or local path / cached name (transformers)."""
    base_url: str | None = None
    """OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (openai)."""
    concurrency: int = 4
    """Requests in flight (openai) or requests per batch (transformers)."""
    timeout: float = 120.0
    """Seconds per HTTP request (openai)."""
    retries: int = 4
    """Retries of one HTTP request on 408/409/429/5xx, timeouts and connection errors, with
    exponential backoff honouring ``Retry-After`` (openai)."""
    max_tokens: int = 512
    """Answer length limit (model backends)."""
    temperature: float = 0.0
    """Sampling temperature (0 = greedy / deterministic)."""
    seed: int = 0
    """Sampling seed (transformers, temperature > 0)."""
    structured_output: str = "auto"
    """``auto``: send the answer's JSON schema as ``response_format`` and fall back to prompted
    JSON when the server refuses it; ``off``: never send it."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS[:2]:
            raise BadUsageError(f"backend kind must be openai or transformers, got {self.kind!r}")
        if self.structured_output not in STRUCTURED_OUTPUT:
            raise BadUsageError(f"structured output must be one of {', '.join(STRUCTURED_OUTPUT)}, "
                                f"got {self.structured_output!r}")
        if self.concurrency < 1:
            raise BadUsageError(f"concurrency must be >= 1, got {self.concurrency}")


def model_server(backend: str, base_url: str | None, model: str | None, *,
                 what: str = "backend") -> tuple[str | None, str | None]:
    """The server and model of an ``openai`` or ``transformers`` backend, from the options or
    the environment (``$MEDSYNTH_OPENAI_BASE_URL``/``$OPENAI_BASE_URL``, ``..._MODEL``);
    ``what`` names the caller in the refusals ("backend", "judge")."""
    import os

    if backend == "openai":
        base_url = (base_url or os.environ.get("MEDSYNTH_OPENAI_BASE_URL")
                    or os.environ.get("OPENAI_BASE_URL"))
        model = model or os.environ.get("MEDSYNTH_OPENAI_MODEL") or os.environ.get("OPENAI_MODEL")
        if not base_url:
            raise BadUsageError(f"the openai {what} needs --base-url (or "
                                "$MEDSYNTH_OPENAI_BASE_URL)",
                                hint="e.g. --base-url http://127.0.0.1:8000/v1")
        if not model:
            raise ValueError(f"the openai {what} needs --model (or $MEDSYNTH_OPENAI_MODEL)")
    if backend == "transformers" and not model:
        raise ValueError(f"the transformers {what} needs --model PATH_OR_NAME")
    return base_url, model


def make_backend(cfg: BackendConfig) -> Backend:
    """Build the model backend ``cfg`` names (imports its libraries only now)."""
    if cfg.kind == "openai":
        from medsynth.mllm.openai_compat import OpenAIBackend

        if not cfg.base_url:
            raise BadUsageError("the openai backend needs a base URL")
        return OpenAIBackend(cfg.base_url, cfg.model, timeout=cfg.timeout, retries=cfg.retries,
                             max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                             concurrency=cfg.concurrency,
                             structured_output=cfg.structured_output)
    from medsynth.mllm.local import TransformersBackend

    return TransformersBackend(cfg.model, max_new_tokens=cfg.max_tokens,
                               temperature=cfg.temperature, seed=cfg.seed,
                               batch_size=cfg.concurrency)


def measure_backend(measurer: Callable[[Request], dict[str, Any]], *, name: str = "measure",
                    model: str | None = None, processes: int = 1) -> Backend:
    """The offline backend: ``measurer`` (picklable) answers each request from its pixels."""
    from medsynth.mllm.measure import MeasureBackend

    return MeasureBackend(measurer, name=name, model=model, processes=processes)
