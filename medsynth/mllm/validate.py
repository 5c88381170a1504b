"""Checking raw answers: the JSON object in an answer, JSON Schema validation, free text.

A check is any callable ``check(raw, item) -> Checked``; ``item`` is whatever the caller asked
about (a dataset row, a sample id), so a check can use it (e.g. the class label a summary must
not repeat). The problems of a failed check go back to the model in the re-ask, so they are
written for the model to read.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

MAX_PROBLEMS = 8
"""At most this many problems are listed per answer (the rest would only drown the re-ask)."""


@dataclasses.dataclass
class Checked:
    """The verdict on one raw answer."""

    value: Any = None
    """What the caller keeps from a valid answer (a parsed, normalised object, or text)."""
    problems: list[str] = dataclasses.field(default_factory=list)
    """Why the answer cannot be used; empty = valid."""

    @property
    def ok(self) -> bool:
        return not self.problems


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def extract_json(text: str) -> dict[str, Any] | None:
    """The JSON object in a model's answer (bare, fenced, or the last {...} block), else None."""
    if not isinstance(text, str):
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    # Balanced {...} blocks, scanned from every opening brace; the last complete one wins.
    depth, start = 0, None
    blocks = []
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and start is not None:
                blocks.append(text[start:i + 1])
    candidates += blocks[::-1]
    for c in candidates:
        try:
            obj = json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def schema_problems(schema: dict[str, Any], obj: Any) -> list[str]:
    """JSON Schema (draft 2020-12) violations of ``obj``, one line each, by location."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(obj),
                    key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for e in errors[:MAX_PROBLEMS]:
        where = "/".join(str(p) for p in e.absolute_path)
        out.append(f"'{where}': {e.message}" if where else e.message)
    return out


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``jsonschema.SchemaError`` when ``schema`` itself is not a valid JSON Schema."""
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema)


@dataclasses.dataclass
class JsonAnswer:
    """Check: the answer holds a JSON object that satisfies ``schema``; then ``extra``.

    ``extra(obj, item)`` returns further problems (rules a schema cannot say, e.g. "the
    rationale must not name the class"). The value of a valid answer is the object.
    """

    schema: dict[str, Any]
    extra: Callable[[dict[str, Any], Any], list[str]] | None = None

    def __post_init__(self) -> None:
        check_schema(self.schema)

    def __call__(self, raw: str, item: Any = None) -> Checked:
        obj = extract_json(raw)
        if obj is None:
            return Checked(problems=["the answer contains no JSON object"])
        problems = schema_problems(self.schema, obj)
        if not problems and self.extra is not None:
            problems = list(self.extra(obj, item))[:MAX_PROBLEMS]
        return Checked(value=obj if not problems else None, problems=problems)


@dataclasses.dataclass
class TextAnswer:
    """Check: free text (a report, a section) of a sensible length, without forbidden phrases.

    The value of a valid answer is the stripped text.
    """

    min_chars: int = 1
    max_chars: int | None = None
    forbidden: tuple[str, ...] = ()
    """Phrases (case-insensitive) the text must not contain."""

    def __call__(self, raw: str, item: Any = None) -> Checked:
        text = (raw or "").strip()
        problems = []
        if len(text) < self.min_chars:
            problems.append(f"the answer is empty or shorter than {self.min_chars} characters")
        if self.max_chars is not None and len(text) > self.max_chars:
            problems.append(f"the answer is longer than {self.max_chars} characters")
        low = text.lower()
        problems += [f"the answer must not contain {p!r}" for p in self.forbidden
                     if p.lower() in low]
        return Checked(value=text if not problems else None, problems=problems)
