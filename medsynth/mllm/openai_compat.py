"""Any OpenAI-compatible chat-completions server (vLLM, Ollama, LM Studio, ``transformers
serve``, hosted APIs) through the official ``openai`` SDK.

* The SDK retries 408, 409, 429, 5xx, timeouts and dropped connections ``retries`` times with
  exponential backoff, honouring ``Retry-After``; each attempt has ``timeout`` seconds. A request
  that still fails is a :class:`~medsynth.mllm.backend.RequestError` (nothing recorded, asked
  again on resume). 401/403 and 404 stop the run at once: every later request would fail too.
* Structured outputs: a request with a JSON schema is sent with
  ``response_format={"type": "json_schema", ...}``. A server that refuses the field (HTTP 400
  or 422) gets the same request again without it, and this backend instance remembers to send
  prompted JSON only from then on. Answers are validated either way (some servers accept the
  field and ignore it).
* The API key comes only from the environment (``MEDSYNTH_OPENAI_API_KEY``, else
  ``OPENAI_API_KEY``). It is sent as a bearer token and nowhere else: it is not part of
  :meth:`OpenAIBackend.info`, and every answer, error message and log record that passes
  through this backend has it replaced by ``[REDACTED]`` (a server may echo headers back).
* Images travel as PNG data URLs inside the message; requests run one per thread
  (``workers`` = concurrency).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from medsynth.errors import MedsynthError
from medsynth.mllm.backend import RequestError
from medsynth.mllm.request import Request

API_KEY_VARS = ("MEDSYNTH_OPENAI_API_KEY", "OPENAI_API_KEY")
"""Environment variables read for the API key, in order."""
NO_KEY = "no-key"
"""Sent when no key is set (local servers ignore it; the SDK requires one)."""
REDACTED = "[REDACTED]"
LOGGERS = ("openai", "httpx", "httpx2", "httpcore", "httpcore2")
"""Loggers of the HTTP stack that get the redacting filter."""
REFUSED_STATUS = (400, 422)
"""Statuses a server answers a field it does not accept with."""


def api_key_from_env() -> str | None:
    """The first non-empty of :data:`API_KEY_VARS`, else None."""
    return next((os.environ[v] for v in API_KEY_VARS if os.environ.get(v)), None)


class Redactor:
    """Replaces secrets in text by ``[REDACTED]``."""

    def __init__(self, *secrets: str | None) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, REDACTED)
        return text


class _RedactingFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:
            return True
        clean = self.redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def _http_loggers() -> list[logging.Logger]:
    names = [n for n in logging.root.manager.loggerDict
             if any(n == p or n.startswith(p + ".") for p in LOGGERS)]
    return [logging.getLogger(n) for n in sorted(set(names) | set(LOGGERS))]


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class OpenAIBackend:
    """Chat backend over HTTP; :meth:`answer_one` is safe to call from several threads."""

    name = "openai"
    batch_size = 1
    writes_text = True
    can_revise = True

    def __init__(self, base_url: str, model: str, *, timeout: float = 120.0, retries: int = 4,
                 max_tokens: int = 512, temperature: float = 0.0, concurrency: int = 4,
                 structured_output: str = "auto", api_key: str | None = None) -> None:
        import openai

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.workers = max(1, concurrency)
        key = api_key if api_key is not None else api_key_from_env()
        self._redact = Redactor(key)
        # None: not tried yet; True: the server took a schema; False: prompted JSON only.
        self._structured: bool | None = None if structured_output == "auto" else False
        self._lock = threading.Lock()
        self.notices: list[str] = []
        """One-line notes worth showing the user (e.g. the schema fallback)."""
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key or NO_KEY,
                                     timeout=timeout, max_retries=retries)
        self._filter = _RedactingFilter(self._redact)
        self._loggers: list[logging.Logger] = []
        self._attach_filter()

    def _attach_filter(self) -> None:
        """Redact on every logger of the HTTP stack (again after requests: loggers of modules
        imported late appear then; adding a filter twice is a no-op)."""
        for lg in _http_loggers():
            lg.addFilter(self._filter)
            if lg not in self._loggers:
                self._loggers.append(lg)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def structured_output(self) -> str:
        """``json_schema`` (the server took the schema), ``prompted`` (refused, or turned off)
        or ``untried`` (no request with a schema yet)."""
        if self._structured is None:
            return "untried"
        return "json_schema" if self._structured else "prompted"

    def info(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "structured_output": self.structured_output,
                "timeout": self.timeout, "retries": self.retries}

    def answer(self, requests: Sequence[Request]) -> list[str | RequestError]:
        out: list[str | RequestError] = []
        for r in requests:
            try:
                out.append(self.answer_one(r))
            except RequestError as e:
                out.append(e)
        return out

    def answer_one(self, req: Request) -> str:
        """Send one request; return the assistant's text (redacted).

        Raises:
            RequestError: the request failed for good (retries exhausted, or refused).
            MedsynthError: authentication failed or the URL/model does not exist.
        """
        body: dict[str, Any] = {
            "model": self.model, "messages": req.openai_messages(),
            "max_tokens": req.max_tokens or self.max_tokens,
            "temperature": self.temperature if req.temperature is None else req.temperature,
            "stream": False}
        with_schema = req.schema is not None and self._structured is not False
        if with_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": req.schema_name, "schema": req.schema}}
        try:
            text = self._post(body)
        except _Refused as r:
            if not with_schema:
                raise RequestError(f"{self.endpoint}: {r}") from None
            del body["response_format"]
            try:
                text = self._post(body)
            except _Refused as r2:
                raise RequestError(f"{self.endpoint}: {r2}") from None
            with self._lock:
                if self._structured is not False:
                    self._structured = False
                    self.notices.append(f"{self.endpoint} refused the JSON schema "
                                        f"(response_format, {r}); asking for prompted JSON")
            return text
        if with_schema:
            with self._lock:
                if self._structured is None:
                    self._structured = True
        return text

    def _post(self, body: dict[str, Any]) -> str:
        import openai

        try:
            raw = self._client.chat.completions.with_raw_response.create(**body)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise MedsynthError(
                f"{self.endpoint}: authentication failed (HTTP {e.status_code}): {self._detail(e)}",
                hint="set the API key in $MEDSYNTH_OPENAI_API_KEY or $OPENAI_API_KEY") from None
        except openai.NotFoundError as e:
            raise MedsynthError(
                f"{self.endpoint}: not found (HTTP 404) for model {self.model!r}: {self._detail(e)}",
                hint="check --base-url (it usually ends in /v1) and --model") from None
        except openai.APIStatusError as e:
            code = e.status_code
            if code in (408, 409, 429) or code >= 500:
                raise RequestError(f"{self.endpoint}: gave up after {self.retries + 1} attempts "
                                   f"(HTTP {code}: {self._detail(e)})") from None
            raise _Refused(code, self._detail(e)) from None
        except openai.APIConnectionError as e:
            cause = e.__cause__
            reason = f"{type(cause).__name__}: {cause}" if cause else f"{type(e).__name__}: {e}"
            raise RequestError(self._redact(f"{self.endpoint}: gave up after {self.retries + 1} "
                                            f"attempts ({reason})")) from None
        finally:
            self._attach_filter()
        return self._redact(_answer_text(raw.http_response.content))

    def _detail(self, e: Any) -> str:
        """The server's error message (redacted, at most 300 characters)."""
        body = getattr(e, "body", None)
        msg: Any = None
        if isinstance(body, dict):
            err = body.get("error", body.get("detail", body))
            msg = err.get("message", err) if isinstance(err, dict) else err
        text = str(msg) if msg is not None else str(getattr(e, "message", "") or e)
        return self._redact(text).strip()[:300]

    def close(self) -> None:
        for lg in self._loggers:
            lg.removeFilter(self._filter)
        self._client.close()


def _answer_text(payload: bytes) -> str:
    """The assistant message of a chat-completions response; the raw body if it has none
    (so a malformed response is kept as a raw answer and re-asked, not lost)."""
    text = payload.decode("utf-8", "replace")
    try:
        content = json.loads(text)["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        return text
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else text
