"""Failures that must fail: describe exits non-zero when images were tried and none was
described (unreachable server, HTTP 500 everywhere, every answer invalid), keeps what it has,
and stops early instead of retrying a dead server for every image."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from typer.testing import CliRunner

from medsynth.artifacts import read_manifest
from medsynth.cli import app
from medsynth.store import open_store
from tests.describe.conftest import VALID, Scripted

runner = CliRunner()


def _describe(ds: Path, store: Path, url: str, *extra: str) -> tuple[int, str]:
    res = runner.invoke(app, ["describe", str(ds), "--out", str(store), "--backend", "openai",
                              "--model", "m", "--base-url", url, "--split", "all", *extra])
    return res.exit_code, res.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens


def test_unreachable_server_exits_nonzero(derm_dataset: Path, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    code, out = _describe(derm_dataset, tmp_path / "store",
                          f"http://127.0.0.1:{_closed_port()}/v1", "--request-retries", "1")
    assert code == 1 and "requests in a row failed" in out and "Connect" in out
    assert time.perf_counter() - t0 < 60
    m = read_manifest(tmp_path / "store", "describe")
    assert m.outputs["status"] == "interrupted" and m.outputs["runs"][0]["errors"] == 8
    assert open_store(tmp_path / "store").records(status=None) == []


def test_http_500_everywhere_exits_nonzero(scripted: Scripted, derm_dataset: Path,
                                           tmp_path: Path) -> None:
    scripted.default = ("status", 500)
    code, out = _describe(derm_dataset, tmp_path / "store", scripted.url, "--request-retries",
                          "0", "--concurrency", "2")
    assert code == 1 and "HTTP 500" in out


def test_few_images_all_errors_exit_nonzero(scripted: Scripted, derm_dataset: Path,
                                            tmp_path: Path) -> None:
    """Fewer failures than stop the run early: the summary's verdict fails the command."""
    scripted.default = ("status", 503)
    code, out = _describe(derm_dataset, tmp_path / "store", scripted.url, "--request-retries",
                          "0", "--limit", "3")
    assert code == 1 and "no image was described (3 request(s) failed)" in out


def test_every_answer_invalid_exits_nonzero(scripted: Scripted, derm_dataset: Path,
                                            tmp_path: Path) -> None:
    scripted.default = ("ok", "I cannot tell.")
    code, out = _describe(derm_dataset, tmp_path / "store", scripted.url, "--max-reasks", "0")
    assert code == 1 and "no image was described (8 answer(s) stayed invalid" in out
    failed = open_store(tmp_path / "store").records(status="failed")
    assert len(failed) == 8 and all(r.raw == "I cannot tell." for r in failed)  # all kept


def test_partial_success_exits_zero(scripted: Scripted, derm_dataset: Path,
                                    tmp_path: Path) -> None:
    scripted.script = [("status", 500)] * 2
    scripted.default = ("ok", json.dumps(VALID))
    code, out = _describe(derm_dataset, tmp_path / "store", scripted.url, "--request-retries",
                          "0", "--concurrency", "1")
    assert code == 0 and "described 6" in out and "2 image(s) could not be described" in out
    code, out = _describe(derm_dataset, tmp_path / "store", scripted.url, "--resume")
    assert code == 0 and "described 2" in out and "skipped 6" in out
