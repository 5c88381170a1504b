"""The declarative configs of every stage: one pydantic base, one YAML loader, one error mapping.

A config is a pydantic model: choices are ``Literal`` types (:mod:`medsynth.choices`), ranges are
``Field`` constraints, rules between options are model validators, unknown keys are refused.
:func:`usage_error` turns a pydantic ``ValidationError`` into medsynth's one-line
:class:`~medsynth.errors.BadUsageError` (the file, the key, the problem; exit code 2) for all of
them. Stage packages may not import each other, so this lives here, shared. Import it lazily from
command modules: pydantic costs start-up time that ``--help`` should not pay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medsynth.errors import BadUsageError, MedsynthError

LaxPath = Annotated[Path, Field(strict=False)]
"""A path field that takes a ``str`` too (strict configs otherwise refuse the conversion)."""

_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _key_of(loc: tuple[int | str, ...], cls: type[Recipe]) -> str:
    parts = list(loc)
    if parts and parts[0] in cls.sections:  # a section's field: its flat (YAML) key
        parts = parts[1:]
    key = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                  for i, p in enumerate(parts))
    names = [p for p in parts if isinstance(p, str)]
    if cls.option_names is not None and names:
        last = names[-1]  # the option (of a nested model too), not the entry of a list
        key = cls.option_names.get(last, "--" + last.replace("_", "-"))
    return key


def problem(err: Mapping[str, Any], key: str) -> str:
    """One pydantic error as ``key problem`` (a validator's own message as it is)."""
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{key} must be one of {expected}, got {given!r}"
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return f"{key} must be {op} {ctx.get(name)}, got {given!r}"
    if kind in ("too_short", "too_long"):
        return f"{key} = {given!r}: {err['msg'][0].lower()}{err['msg'][1:]}"
    if kind == "missing":
        return f"{key} is required"
    if kind in ("value_error", "assertion_error"):  # a validator's own message names its keys
        msg = str(ctx["error"]) if "error" in ctx else err["msg"]
        return msg
    return f"{key} = {given!r} is not valid: {err['msg'][0].lower()}{err['msg'][1:]}"


def one_line(e: ValidationError, key_of: Callable[[tuple[int | str, ...]], str],
             where_of: Callable[[tuple[int | str, ...]], str] = lambda loc: "",
             unknown_context: str = "") -> tuple[str, tuple[int | str, ...] | None]:
    """The one mapping of a pydantic error to one line: ``WHERE key problem``; unknown keys of
    one mapping together (``unknown key(s) [...]``). ``key_of``/``where_of`` name a location.
    Also returns the location of the mapping with unknown keys (None: no unknown keys)."""
    errors = e.errors(include_url=False)
    extra = [err for err in errors if err["type"] == "extra_forbidden"]
    if extra:
        parent = tuple(extra[0]["loc"][:-1])
        keys = sorted(str(err["loc"][-1]) for err in extra if tuple(err["loc"][:-1]) == parent)
        return f"{where_of(parent)}unknown key(s) {keys}{unknown_context}", parent
    first = errors[0]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    loc = tuple(first["loc"])
    return f"{where_of(loc)}{problem(first, key_of(loc))}{more}", None


def usage_error(e: ValidationError, cls: type[Recipe], source: str | None = None) -> BadUsageError:
    """A config's pydantic error as medsynth's one-line usage error: ``SOURCE: PREFIX: key
    problem`` (unknown keys with the known ones as the hint)."""
    where = "".join(f"{s}: " for s in (source, cls.error_prefix) if s)
    msg, unknown = one_line(e, lambda loc: _key_of(loc, cls), unknown_context=cls.unknown_keys_context)
    return BadUsageError(where + msg,
                         hint=f"known keys: {', '.join(cls.keys())}" if unknown is not None else None)


class Section(BaseModel):
    """A group of a sectioned config's keys (``TrainConfig.optim``...); flat keys in YAML."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True,
                              validate_by_name=True, validate_by_alias=True)


class Recipe(BaseModel):
    """Base of every stage config: ``from_dict``, ``from_yaml``, ``to_dict``, ``to_yaml``,
    ``replace``; construction errors are one-line :class:`BadUsageError` s.

    ``sections``: names of :class:`Section` fields whose keys are flat in dicts and YAML (and
    readable flat, ``cfg.max_steps`` = ``cfg.optim.max_steps``).
    """

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    error_prefix: ClassVar[str] = ""
    """Put before every message (``train config``)."""
    unknown_keys_context: ClassVar[str] = ""
    """Appended to the unknown-keys message (e.g. " for --stage clip")."""
    option_names: ClassVar[dict[str, str] | None] = None
    """Configs filled from CLI options name a key as its option (``--batch-size``; these are the
    exceptions); None = as the YAML key."""
    sections: ClassVar[tuple[str, ...]] = ()
    _flat: ClassVar[dict[str, tuple[str, str]]] = {}

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise usage_error(e, type(self)) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        flat: dict[str, tuple[str, str]] = {}
        for s in cls.sections:
            section = cls.model_fields[s].annotation
            assert isinstance(section, type) and issubclass(section, Section), s
            for name, f in section.model_fields.items():
                flat[f.alias or name] = (s, name)
        cls._flat = flat

    @model_validator(mode="before")
    @classmethod
    def _route_flat_keys(cls, raw: Any) -> Any:
        """Flat keys (``max_steps``) go to their section; anything else stays (unknown keys are
        then refused at the top)."""
        if not cls.sections or not isinstance(raw, dict):
            return raw
        out: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {}
        for k, v in raw.items():
            if k in cls._flat:
                grouped.setdefault(cls._flat[k][0], {})[k] = v
            else:
                out[k] = v
        for s, keys in grouped.items():
            given = out.get(s)
            if isinstance(given, Section):
                given = given.model_dump(by_alias=True)
            out[s] = {**(given if isinstance(given, dict) else {}), **keys}
        return out

    def __getattr__(self, name: str) -> Any:
        where = type(self)._flat.get(name)
        if where is None:
            return super().__getattr__(name)  # type: ignore[misc]
        return getattr(self.__dict__[where[0]], where[1])

    @classmethod
    def keys(cls) -> list[str]:
        """The flat keys, in order."""
        names: list[str] = []
        for name in cls.model_fields:
            names.extend(k for k, w in cls._flat.items() if w[0] == name) if name in cls.sections \
                else names.append(name)
        return names

    def items(self) -> Iterator[tuple[str, Any]]:
        yield from self.to_dict().items()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> Self:
        """Build from a dict (flat keys); any problem is one line naming ``source`` and the key."""
        try:
            return cls.model_validate(dict(d))
        except ValidationError as e:
            raise usage_error(e, cls, source) from None
        except MedsynthError as e:  # a validator's own domain error
            raise type(e)(f"{source}: {e.message}", hint=e.hint) from None

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
        """Flat keys -> values (sections flattened), JSON/YAML-ready apart from paths."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            v = getattr(self, name)
            if name in self.sections:
                out.update(v.model_dump(by_alias=True))
            else:
                out[name] = v.model_dump() if isinstance(v, BaseModel) else _copy(v)
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` (None values are ignored: 'option not given')."""
        return type(self)(**{**self.to_dict(),
                             **{k: v for k, v in changes.items() if v is not None}})


def _copy(v: Any) -> Any:
    return list(v) if isinstance(v, list) else v
