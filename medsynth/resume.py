"""Resume identity: a resumed run must continue the same run. One check for every stage.

A stage records the settings that decide its output (train: the recipe; generate: the run's
identity; describe: its run key) and, on ``--resume``, compares them with the new ones,
leaving out the fields it lets change (e.g. train's ``RESUMABLE_CHANGES``: run length and
bookkeeping). Values are compared in their JSON form, so a tuple equals the list it was saved as.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from medsynth.errors import MedsynthError


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any], *,
                     ignore: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
    """``{key: (old value, new value)}`` for every key (but ``ignore``) whose value differs."""
    skip = set(ignore)
    a, b = json.loads(json.dumps(dict(old))), json.loads(json.dumps(dict(new)))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in skip and a.get(k) != b.get(k)}


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``"lr (0.0002 -> 0.01), seed (0 -> 1)"``."""
    return ", ".join(f"{k} ({o!r} -> {n!r})" for k, (o, n) in changes.items())


def require_same_settings(old: Mapping[str, Any], new: Mapping[str, Any], *, where: str,
                          ignore: Iterable[str] = (), hint: str | None = None) -> None:
    """Raise ``MedsynthError("<where>: <k> (old -> new), ...")`` when the settings differ."""
    changes = changed_settings(old, new, ignore=ignore)
    if changes:
        raise MedsynthError(f"{where}: {describe_changes(changes)}", hint=hint)
