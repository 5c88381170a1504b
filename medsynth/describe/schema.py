"""Controlled vocabularies and validation of a describer's structured answer.

A template (``templates/*.yaml``) declares its attributes; each attribute is one of

* ``enum``: one value of ``values`` (strings or integers),
* ``multi``: a list of values of ``values`` (``none`` alone when nothing is seen),
* ``number``: a float within ``[min, max]``.

Every attribute also accepts the explicit escape values :data:`UNSURE` ("not_visible",
"uncertain"), so a model is never pushed to invent a finding it cannot see.
The answer must also carry a non-empty ``summary`` that does not parrot the class label (unless
it comes from a backend that writes no text: measurements). A measuring backend may add the
object :data:`MEASUREMENTS` with further measured numbers, kept beside the attributes.

:meth:`Schema.json_schema` states the same rules as a JSON Schema, for servers that constrain
their output to one (``response_format``); :meth:`Schema.validate` stays the judge, since it
also normalises spellings ("Light brown" -> ``light_brown``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from medsynth.errors import MedsynthError
from medsynth.mllm.validate import extract_json

__all__ = ["KINDS", "MEASUREMENTS", "UNSURE", "AttributeSpec", "Schema", "extract_json",
           "label_parroted", "norm_token", "schema_from_dict"]

UNSURE = ("not_visible", "uncertain")
"""Values every attribute accepts: the model says it cannot see or judge the attribute."""
KINDS = ("enum", "multi", "number")
MEASUREMENTS = "measurements"
"""Key of the optional object of extra measured values in a measuring backend's answer."""


def norm_token(value: Any) -> Any:
    """Normalise a vocabulary token: lower case, spaces/hyphens to underscores; ints stay ints."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    s = str(value).strip().lower()
    s = re.sub(r"[\s\-/]+", "_", s)
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    return s


@dataclasses.dataclass
class AttributeSpec:
    """One attribute of a template's answer schema."""

    name: str
    """Key in the JSON answer (and in the record's ``attributes``)."""
    kind: str
    """``enum`` | ``multi`` | ``number``."""
    values: tuple[Any, ...] = ()
    """Controlled vocabulary (enum and multi)."""
    min: float | None = None
    """Lower bound (number)."""
    max: float | None = None
    """Upper bound (number)."""
    question: str = ""
    """What the step-wise prompt asks about this attribute."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MedsynthError(f"attribute {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("enum", "multi") and not self.values:
            raise MedsynthError(f"attribute {self.name!r}: an {self.kind} attribute needs 'values'")
        self.values = tuple(norm_token(v) for v in self.values)

    def describe(self) -> str:
        """The vocabulary line shown to the model."""
        unsure = " | ".join(UNSURE)
        if self.kind == "number":
            rng = f"a number from {self.min:g} to {self.max:g}" if self.min is not None and self.max is not None else "a number"
            return f'"{self.name}": {rng}, or "{UNSURE[0]}" | "{UNSURE[1]}"'
        vocab = " | ".join(json.dumps(v) for v in self.values)
        if self.kind == "enum":
            return f'"{self.name}": one of {vocab} | "{UNSURE[0]}" | "{UNSURE[1]}"'
        return f'"{self.name}": a list of any of {vocab} (["none"] if absent, ["{unsure.split(" | ")[1]}"] if unsure)'

    def json_schema(self) -> dict[str, Any]:
        """This attribute as a JSON Schema (the vocabulary, or the range, or an unsure value)."""
        unsure = {"type": "string", "enum": list(UNSURE)}
        if self.kind == "number":
            num: dict[str, Any] = {"type": "number"}
            if self.min is not None:
                num["minimum"] = self.min
            if self.max is not None:
                num["maximum"] = self.max
            return {"anyOf": [num, unsure]}
        if self.kind == "enum":
            return {"enum": [*self.values, *UNSURE]}
        return {"type": "array", "items": {"enum": [*self.values, "none", *UNSURE]},
                "minItems": 1}

    def validate(self, value: Any) -> tuple[Any, str | None]:
        """Return ``(normalised value, None)`` or ``(None, problem)``."""
        if value is None:
            return None, f"'{self.name}' is missing"
        if isinstance(value, str) and norm_token(value) in UNSURE:
            return norm_token(value), None
        if self.kind == "number":
            try:
                x = float(value)
            except (TypeError, ValueError):
                return None, f"'{self.name}' must be a number or one of {list(UNSURE)}, got {value!r}"
            if x != x or (self.min is not None and x < self.min) or (self.max is not None and x > self.max):
                return None, f"'{self.name}' = {x:g} is outside [{self.min:g}, {self.max:g}]"
            return x, None
        if self.kind == "enum":
            v = norm_token(value)
            if v not in self.values:
                return None, f"'{self.name}' = {value!r} is not one of {list(self.values)}"
            return v, None
        items = value if isinstance(value, list) else [value] if isinstance(value, str) else None
        if items is None:
            return None, f"'{self.name}' must be a list, got {value!r}"
        if isinstance(value, str) and ";" in value:
            items = value.split(";")
        toks = [norm_token(v) for v in items]
        if not toks or toks == ["none"]:
            return [], None
        if len(toks) == 1 and toks[0] in UNSURE:
            return toks[0], None
        bad = [t for t in toks if t not in self.values]
        if bad:
            return None, f"'{self.name}' has values outside the vocabulary: {bad} (allowed: {list(self.values)})"
        # Canonical order and no duplicates, so equal findings compare equal.
        return [v for v in self.values if v in toks], None


@dataclasses.dataclass
class Schema:
    """The attributes of one template plus the rules for the free-text summary."""

    attributes: list[AttributeSpec]
    summary_field: str = "summary"

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def json_skeleton(self) -> str:
        """The answer format shown to the model."""
        lines = [a.describe() for a in self.attributes]
        lines.append(f'"{self.summary_field}": one or two sentences describing only what is visible')
        return "{\n  " + ",\n  ".join(lines) + "\n}"

    def json_schema(self) -> dict[str, Any]:
        """The answer as a JSON Schema: every attribute and the summary, nothing else."""
        props = {a.name: a.json_schema() for a in self.attributes}
        props[self.summary_field] = {"type": "string", "minLength": 10}
        return {"type": "object", "properties": props, "required": list(props),
                "additionalProperties": False}

    def validate(self, answer: dict[str, Any], label: str | None = None, *,
                 require_summary: bool = True) -> tuple[dict[str, Any], str, list[str]]:
        """Check an answer; return (attributes, summary, problems). Empty problems = valid.

        Scalar values in the answer's :data:`MEASUREMENTS` object are kept in the attributes
        too (after the schema's own attributes, never over them). ``require_summary=False``
        accepts an answer without a summary (backends that write no text).
        """
        problems: list[str] = []
        attrs: dict[str, Any] = {}
        for spec in self.attributes:
            value, problem = spec.validate(answer.get(spec.name))
            if problem:
                problems.append(problem)
            else:
                attrs[spec.name] = value
        extra = answer.get(MEASUREMENTS)
        if isinstance(extra, dict):
            for k, v in extra.items():
                if k not in attrs and k != self.summary_field and (
                        v is None or isinstance(v, (str, int, float, bool))):
                    attrs[str(k)] = v
        summary = answer.get(self.summary_field)
        if not require_summary and (summary is None or summary == ""):
            summary = ""
        elif not isinstance(summary, str) or len(summary.strip()) < 10:
            problems.append(f"'{self.summary_field}' must be a sentence describing the image")
            summary = ""
        elif label and label_parroted(summary, label):
            problems.append(f"'{self.summary_field}' repeats the class label {label!r}; "
                            "describe what is visible instead of naming the diagnosis")
        return attrs, str(summary).strip(), problems


def label_parroted(text: str, label: str) -> bool:
    """True when the text names the class label (underscores read as spaces)."""
    words = re.sub(r"[_\-]+", " ", label.lower()).strip()
    return bool(words) and re.search(rf"\b{re.escape(words)}\b", text.lower()) is not None


def schema_from_dict(attrs: dict[str, Any], where: str) -> Schema:
    """Build a schema from a template's ``attributes`` mapping."""
    if not isinstance(attrs, dict) or not attrs:
        raise MedsynthError(f"{where}: 'attributes' must be a non-empty mapping")
    specs = []
    for name, d in attrs.items():
        if not isinstance(d, dict) or "kind" not in d:
            raise MedsynthError(f"{where}: attribute {name!r} needs a mapping with 'kind'")
        unknown = set(d) - {"kind", "values", "min", "max", "question"}
        if unknown:
            raise MedsynthError(f"{where}: attribute {name!r} has unknown keys {sorted(unknown)}")
        specs.append(AttributeSpec(name=str(name), kind=d["kind"], values=tuple(d.get("values") or ()),
                                   min=d.get("min"), max=d.get("max"), question=d.get("question", "")))
    return Schema(specs)
