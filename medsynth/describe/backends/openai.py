"""Any OpenAI-compatible chat-completions server: vLLM, Ollama, LM Studio, ``transformers serve``,
hosted APIs.

* Base URL and model from options or the environment; the API key only from the environment
  (``MEDSYNTH_OPENAI_API_KEY`` or ``OPENAI_API_KEY``), sent as a bearer token and never logged.
* Images travel as PNG data URLs inside the message.
* 429, 5xx, timeouts and dropped connections are retried with exponential backoff (honouring
  ``Retry-After``); 401/403 and 404 stop the run with a clear message, since every later request
  would fail the same way.

Standard library HTTP (urllib) keeps the dependency list short; ``run.py`` bounds concurrency with
a thread pool (one request per thread).
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from typing import Any

from medsynth.describe.backends import RequestError, data_url
from medsynth.describe.prompts import Conversation
from medsynth.errors import MedsynthError

API_KEY_VARS = ("MEDSYNTH_OPENAI_API_KEY", "OPENAI_API_KEY")
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIBackend:
    """Chat backend over HTTP; :meth:`chat_one` is safe to call from several threads."""

    name = "openai"
    batched = False

    def __init__(self, base_url: str, model: str, *, timeout: float = 120.0, retries: int = 4,
                 max_tokens: int = 512, temperature: float = 0.0, backoff: float = 0.5,
                 max_backoff: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._key = next((os.environ[v] for v in API_KEY_VARS if os.environ.get(v)), None)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _request(self, body: dict[str, Any]) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return urllib.request.Request(self.endpoint, data=json.dumps(body).encode("utf-8"),
                                      headers=headers, method="POST")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * (2 ** attempt) * (1 + 0.25 * random.random())
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        time.sleep(min(delay, self.max_backoff))

    def chat_one(self, conv: Conversation, image_url: str | None = None) -> str:
        """Send one conversation; return the assistant's text (raises RequestError/MedsynthError)."""
        body = {"model": self.model, "messages": conv.openai_messages(image_url or data_url(conv.image)),
                "max_tokens": self.max_tokens, "temperature": self.temperature, "stream": False}
        last = "no attempt"
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(self._request(body), timeout=self.timeout) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as e:
                detail = _error_text(e)
                if e.code in (401, 403):
                    raise MedsynthError(
                        f"{self.endpoint}: authentication failed (HTTP {e.code}): {detail}",
                        hint="set the API key in $MEDSYNTH_OPENAI_API_KEY or $OPENAI_API_KEY") from None
                if e.code == 404:
                    raise MedsynthError(
                        f"{self.endpoint}: not found (HTTP 404) for model {self.model!r}: {detail}",
                        hint="check --base-url (it usually ends in /v1) and --model") from None
                last = f"HTTP {e.code}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise RequestError(f"{self.endpoint}: {last}") from None
                if attempt < self.retries:
                    self._sleep(attempt, e.headers.get("Retry-After") if e.headers else None)
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}"
                if attempt < self.retries:
                    self._sleep(attempt, None)
                continue
            return _answer_text(payload)
        raise RequestError(f"{self.endpoint}: gave up after {self.retries + 1} attempts ({last})")

    def close(self) -> None:
        pass


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        text = e.read().decode("utf-8", "replace")
    except Exception:
        text = ""
    try:
        obj = json.loads(text)
        msg = obj.get("error", obj)
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        text = str(msg)
    except (json.JSONDecodeError, AttributeError):
        pass
    return (text or e.reason or "").strip()[:300]


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
