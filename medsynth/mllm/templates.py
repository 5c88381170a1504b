"""Prompt templates: placeholders filled from values, and a version that changes with the text.

A prompt file's recorded version is ``name@version+<first 8 hex of the file's sha256>``, so any
edit shows in every answer it produced and makes ``--resume`` ask again (see
:mod:`medsynth.mllm.resume`). :class:`PromptTemplate` is the plain kind (a system and a user
text, YAML keys ``name``, ``version``, ``system``, ``user``); describe's chain-of-thought
templates add steps and an answer schema on top of the same two functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import string
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.mllm.request import Request


def fill(text: str, values: dict[str, Any]) -> str:
    """``str.format`` that leaves unknown placeholders as they are (``{schema}`` stays)."""

    class _Keep(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    return string.Formatter().vformat(text, (), _Keep(values))


def content_version(name: str, version: str, raw: bytes) -> tuple[str, str]:
    """(sha256 of ``raw``, ``name@version+hash8``)."""
    digest = hashlib.sha256(raw).hexdigest()
    return digest, f"{name}@{version}+{digest[:8]}"


@dataclasses.dataclass
class PromptTemplate:
    """A system and a user text with ``{placeholders}``."""

    name: str
    version: str
    system: str
    user: str
    digest: str = ""
    """sha256 of the file it was read from ("" for one made in code)."""
    source: str = ""

    @property
    def full_version(self) -> str:
        return f"{self.name}@{self.version}+{self.digest[:8]}" if self.digest else \
            f"{self.name}@{self.version}"

    def request(self, images: list[np.ndarray] | None = None, *,
                schema: dict[str, Any] | None = None, **values: Any) -> Request:
        """A request with the placeholders filled from ``values``."""
        return Request(user=fill(self.user, values), system=fill(self.system, values),
                       images=list(images or []), schema=schema)


def load_prompt_template(path: str | Path) -> PromptTemplate:
    """Read a YAML prompt file (keys ``name``, ``version``, ``user``, optional ``system``)."""
    import yaml

    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise MedsynthError(f"{p}: cannot read the prompt file ({e.strerror or e})") from None
    try:
        d = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise MedsynthError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(d, dict):
        raise MedsynthError(f"{p}: a prompt file must be a YAML mapping")
    missing = [k for k in ("name", "version", "user") if not d.get(k)]
    if missing:
        raise MedsynthError(f"{p}: the prompt file is missing {missing}")
    digest, _ = content_version(str(d["name"]), str(d["version"]), raw)
    return PromptTemplate(name=str(d["name"]), version=str(d["version"]),
                          system=str(d.get("system") or ""), user=str(d["user"]), digest=digest,
                          source=str(p))
