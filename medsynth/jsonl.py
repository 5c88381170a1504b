"""JSON lines: the one reader and the one appender of every journal and store.

Records carry any Unicode text (prompts pasted from PDFs hold U+2028/U+2029/U+0085, model answers
hold NUL or a BOM). Lines are split on ``\\n`` only, never with :meth:`str.splitlines` (which also
splits on those separators and so tore a record in two), and the writer escapes the three
separators, so a record is one line for any line-oriented tool too. A lone surrogate (from a
command-line argument that is not UTF-8, or a ``\\udXXX`` escape) is no text: the writer refuses
it before writing anything, the reader names the file and line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError

_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}
_BOM = b"\xef\xbb\xbf"


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, configs (pydantic, flat keys), paths, numpy scalars and tuples to plain JSON
    types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if callable(getattr(obj, "model_dump", None)) and not isinstance(obj, type):
        return to_jsonable(obj.to_dict() if callable(getattr(obj, "to_dict", None))
                           else obj.model_dump())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return obj


def lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate (U+D800..U+DFFF) in ``text``, None when it is text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def check_text(text: str, what: str) -> str:
    """``text``, or a one-line error naming ``what`` when it holds a lone surrogate."""
    i = lone_surrogate(text)
    if i is not None:
        raise MedsynthError(
            f"{what}: not valid Unicode text (lone surrogate U+{ord(text[i]):04X} at character "
            f"{i + 1}; bytes that are not UTF-8?)", hint="save or pass the text as UTF-8")
    return text


def dumps_line(record: Any, where: str = "record") -> bytes:
    """One record as one UTF-8 line (ending in ``\\n``); refuses a lone surrogate."""
    line = json.dumps(to_jsonable(record), ensure_ascii=False)
    for ch, esc in _SEPARATORS.items():
        if ch in line:  # only inside strings, where the escape means the same character
            line = line.replace(ch, esc)
    check_text(line, where)
    return (line + "\n").encode("utf-8")


class JsonlAppender:
    """Append-and-flush JSON-lines writer: every record is on disk before the next starts.

    A torn last line from a killed run is dropped here (and by :func:`read_jsonl`).
    """

    def __init__(self, path: str | os.PathLike[str], sync_interval: float = 0.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Drop a torn tail so the next record starts on its own line.
        if self.path.exists() and self.path.stat().st_size:
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self._f = open(self.path, "ab")  # noqa: SIM115
        self.sync_interval = sync_interval
        self._last_sync = _monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(dumps_line(record, f"{self.path}: a record to write"))  # whole or nothing
        self._f.flush()
        if self.sync_interval <= 0 or _monotonic() - self._last_sync >= self.sync_interval:
            os.fsync(self._f.fileno())
            self._last_sync = _monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _monotonic() -> float:
    import time

    return time.monotonic()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a torn last line left by a killed writer.

    Splits on ``\\n`` only (U+2028, U+2029, U+0085 and NUL are text inside a record); a BOM an
    editor put at the start is ignored.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    lines = data.split(b"\n")
    last = len(lines) - 1 if lines[-1].strip() else len(lines) - 2  # the torn tail, if any
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if i == last:
                break
            raise MedsynthError(f"{path}: line {i + 1} is not valid JSON ({e})") from e
        check_text(json.dumps(rec, ensure_ascii=False), f"{path}: line {i + 1}")
        out.append(rec)
    return out
