"""A small OpenAI-compatible chat server on loopback whose answers follow a script.

Shared by the describe and mllm tests (fixture ``scripted`` in tests/conftest.py). Real HTTP,
real status codes and headers, so the ``openai`` SDK's retries, timeouts and errors are what is
tested, not a mock of them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VALID = {"diameter_mm": 7.5, "asymmetry": 1, "border": "irregular",
         "colors": ["light_brown", "dark_brown"], "structures": ["none"],
         "summary": "A brown oval lesion with two shades and a notched border."}
"""A valid answer to the derm template (the default answer)."""
SCHEMA_MODES = ("accept", "refuse422", "refuse400", "ignore")


def chat_body(content: str) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}


class Scripted:
    """The script and what the server saw.

    Each script entry is one of: ``("ok", text)``, ``("status", code)``, ``("slow", seconds,
    text)``, ``("retry_after", seconds)`` (a 429 asking to wait), ``("echo_key",)`` (answers
    with the Authorization header it received, in the body and a response header),
    ``("echo_key_error", code)`` (an error whose
    message repeats that header). When the script is used up, ``default`` answers.

    ``schema_mode`` is what the server does with ``response_format``: ``accept`` (vLLM,
    Ollama: answers normally), ``refuse422`` (``transformers serve`` before 5.x: HTTP 422),
    ``refuse400`` (HTTP 400), ``ignore`` (same as accept, for readability). A refusal does
    not use up a script entry.
    """

    def __init__(self) -> None:
        self.script: list[tuple[Any, ...]] = []
        self.default: tuple[Any, ...] = ("ok", "```json\n" + json.dumps(VALID) + "\n```")
        self.schema_mode = "accept"
        self.requests: list[dict[str, Any]] = []
        self.headers: list[Any] = []
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.url = ""

    def next(self) -> tuple[Any, ...]:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    @property
    def with_schema(self) -> list[bool]:
        """Per request: did it carry response_format?"""
        return ["response_format" in r for r in self.requests]


@contextmanager
def serve() -> Iterator[Scripted]:
    """Run a scripted server on a free loopback port for the duration of the block."""
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append(body)
                state.headers.append(self.headers)  # case-insensitive lookups
                state.times.append(time.monotonic())
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            if "response_format" in body and state.schema_mode.startswith("refuse"):
                code = int(state.schema_mode[-3:])
                self._send(code, {"detail": "Unexpected fields in the request: "
                                            "{'response_format'}"})
                return
            step = state.next()
            auth = str(self.headers.get("Authorization", ""))
            if step[0] == "status":
                self._send(step[1], {"error": {"message": f"scripted {step[1]}"}},
                           {"Retry-After": "0"} if step[1] == 429 else None)
            elif step[0] == "retry_after":
                self._send(429, {"error": {"message": "slow down"}},
                           {"Retry-After": str(step[1])})
            elif step[0] == "slow":
                time.sleep(step[1])
                self._send(200, chat_body(step[2]))
            elif step[0] == "echo_key":
                self._send(200, chat_body(f"you sent {auth!r}; " + json.dumps(VALID)),
                           {"X-Echo-Authorization": auth})
            elif step[0] == "echo_key_error":
                self._send(step[1], {"error": {"message": f"bad header {auth!r}"}})
            else:
                self._send(200, chat_body(step[1]))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
