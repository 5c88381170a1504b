"""Recipe configs read from YAML (train, train --stage clip, refine): one loader for all.

Stage packages may not import each other, so the typed-dataclass <-> YAML round trip with its
one-line errors (unknown keys, wrong types) lives here, shared.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Self

from medsynth.errors import BadUsageError, MedsynthError


def type_ok(v: Any, tp: Any) -> bool:
    """Whether a YAML value ``v`` fits the annotation ``tp`` (ints are floats, bools are not ints)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(v, a) for a in args)
    if tp is type(None):
        return v is None
    if origin is list:
        return isinstance(v, list) and all(type_ok(x, args[0]) for x in v)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, tp)


class Recipe:
    """Mixin for a dataclass recipe: ``from_dict``, ``from_yaml``, ``to_dict``, ``to_yaml``,
    ``replace``."""

    unknown_keys_context: ClassVar[str] = ""
    """Appended to the unknown-keys message (e.g. " for --stage clip")."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> Self:
        """Build from a dict; unknown keys and wrong types are errors naming ``source``."""
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise BadUsageError(f"{source}: unknown keys {unknown}{cls.unknown_keys_context}",
                                hint=f"known keys: {', '.join(known)}")
        hints = typing.get_type_hints(cls)
        for k, v in d.items():
            if not type_ok(v, hints[k]):
                raise BadUsageError(f"{source}: {k} = {v!r} is not of type {hints[k]}")
        try:
            return cls(**d)
        except BadUsageError as e:
            raise BadUsageError(f"{source}: {e.message}", hint=e.hint) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise MedsynthError(f"{path}: cannot read recipe ({e})") from e
        if not isinstance(raw, dict):
            raise MedsynthError(f"{path}: a recipe must be a YAML mapping of option: value")
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (None values are ignored: 'option not given')."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items()  # type: ignore[type-var]
                                            if v is not None})
