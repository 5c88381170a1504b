"""Fixtures for the describe tests: a tiny labelled derm dataset and a scripted chat server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medsynth.data.dataset import finish_dataset
from medsynth.data.save import save_png
from medsynth.measure.derm import COLOR_RGB
from tests.measure.shapes import lesion

CLASSES = ("melanoma", "nevus")


def make_derm_dataset(root: Path, n_per_class: int = 4, size: int = 48) -> Path:
    """A dataset folder of synthetic lesions with known diameter and colour in labels.csv."""
    rows = []
    for ci, cls in enumerate(CLASSES):
        for i in range(n_per_class):
            a = size * (0.18 + 0.03 * i)
            color = "dark_brown" if ci == 0 else "light_brown"
            arr = lesion(size, a, a * 0.7, color=COLOR_RGB[color], seed=ci * 100 + i)
            rel = f"images/{cls}/{cls}_{i}.png"
            save_png(arr, root / rel)
            rows.append({"image_id": f"{cls}_{i}", "path": rel, "class": cls,
                         "split": "test" if i == 0 else "train",
                         "diameter_mm": round(2 * a * 20 / size, 3), "colors": color})
    table = pd.DataFrame(rows)
    finish_dataset(root, table, config={"test": True}, classes=list(CLASSES), channels=3,
                   dtype="uint8", modality="XC", extra={"mm_per_px": 20 / size, "size": size})
    return root


@pytest.fixture
def derm_dataset(tmp_path: Path) -> Path:
    return make_derm_dataset(tmp_path / "derm")


VALID = {"diameter_mm": 7.5, "asymmetry": 1, "border": "irregular",
         "colors": ["light_brown", "dark_brown"], "structures": ["none"],
         "summary": "A brown oval lesion with two shades and a notched border."}


def chat_body(content: str) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}


class Scripted:
    """A small OpenAI-compatible server whose answers follow a script.

    Each script entry is one of: ``("ok", text)``, ``("status", code)``, ``("slow", seconds,
    text)``. When the script is used up, ``default`` answers. Every request body is kept.
    """

    def __init__(self) -> None:
        self.script: list[tuple[Any, ...]] = []
        self.default: tuple[Any, ...] = ("ok", "```json\n" + json.dumps(VALID) + "\n```")
        self.requests: list[dict[str, Any]] = []
        self.headers: list[Any] = []
        self.lock = threading.Lock()
        self.url = ""

    def next(self) -> tuple[Any, ...]:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


@pytest.fixture
def scripted() -> Iterator[Scripted]:
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
            step = state.next()
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
            elif step[0] == "status":
                self._send(step[1], {"error": {"message": f"scripted {step[1]}"}},
                           {"Retry-After": "0"} if step[1] == 429 else None)
            elif step[0] == "slow":
                time.sleep(step[1])
                self._send(200, chat_body(step[2]))
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
