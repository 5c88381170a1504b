"""Criteria files: per class, a checklist of visually checkable items a judge verifies (MAGIC).

A criteria file is YAML (format in docs/judge.md)::

    name: derm-demo
    version: 1
    subject: dermoscopy image of a skin lesion     # what the judge is looking at
    measurer: derm                                 # offline judge: derm | cxr | none
    field_of_view_mm: 20                           # pixel size when nothing else says it
    validity: The image shows one skin lesion seen through a dermoscope.
    classes:
      melanoma:
        description: a malignant melanocytic lesion
        criteria:
          - id: asymmetry
            text: The lesion is asymmetric in shape or colour about at least one axis.
            weight: 1.0
            measure: {attribute: asymmetry, min: 1}

The file is versioned by the sha256 of its bytes (``CriteriaFile.sha256``); a judged folder
keeps the file verbatim and every verdict names that hash. ``measure`` says how the offline
judge checks an item from the pixel measurers (:mod:`medsynth.pixel_attributes`): a measured
``attribute`` and a condition on it (``min``/``max`` for numbers, ``values`` for categories,
``any_of``/``none_of`` for lists such as colours). Items without ``measure`` are ``unsure`` for
the offline judge, never guessed.

Shared by ``judge`` and ``refine`` (stage packages do not import each other).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from medsynth.errors import MedsynthError

BUILTIN_DIR = Path(__file__).resolve().parent / "criteria_files"
"""Criteria files shipped with medsynth (``derm``, ``cxr``, ``template``)."""
BUILTIN = ("derm", "cxr")
"""Shipped criteria for the demo classes (``template.yaml`` is the start of your own)."""
Measurer = Literal["derm", "cxr", "none"]
MEASURERS = get_args(Measurer)
MEASURED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "derm": ("diameter_mm", "asymmetry", "border_irregularity", "border", "colors", "n_colors",
             "structures", "skin_tone", "hair"),
    "cxr": ("side", "zone", "opacity_extent", "ctr", "heart_width_px", "thorax_width_px"),
    "none": (),
}
"""What each measurer measures (the demo ``labels.csv`` columns, :mod:`medsynth.pixel_attributes`)."""
LIST_ATTRIBUTES = ("colors", "structures")
"""Attributes whose value is a list (``any_of`` / ``none_of`` apply)."""
CONDITIONS = ("min", "max", "values", "any_of", "none_of")
VERDICTS = ("met", "not_met", "unsure")
"""What a judge can say about one criterion."""
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class MeasureRule:
    """How the offline judge checks one criterion: a measured attribute and a condition."""

    attribute: str
    """A key of the measurer's result (``MEASURED_ATTRIBUTES``)."""
    min: float | None = None
    """Met when the value is >= min (numbers)."""
    max: float | None = None
    """Met when the value is <= max (numbers)."""
    values: tuple[str, ...] = ()
    """Met when the value is one of these (categories, compared as text)."""
    any_of: tuple[str, ...] = ()
    """Met when the (list) value holds at least one of these."""
    none_of: tuple[str, ...] = ()
    """Met when the (list) value holds none of these."""

    def describe(self) -> str:
        """The rule in a few words (the offline judge's rationale quotes it)."""
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.values:
            parts.append("in {" + ", ".join(self.values) + "}")
        if self.any_of:
            parts.append("has any of {" + ", ".join(self.any_of) + "}")
        if self.none_of:
            parts.append("has none of {" + ", ".join(self.none_of) + "}")
        return f"{self.attribute} " + " and ".join(parts)


@dataclasses.dataclass(frozen=True)
class Criterion:
    """One checklist item."""

    id: str
    """Unique within its class; a column of scores.csv."""
    text: str
    """What the judge is asked to verify (a statement that is true of a good image)."""
    weight: float = 1.0
    """Its share of the score (weights are normalised per class)."""
    measure: MeasureRule | None = None
    """How the offline judge checks it (None: the offline judge answers ``unsure``)."""


@dataclasses.dataclass(frozen=True)
class ClassCriteria:
    """The checklist of one class."""

    name: str
    description: str
    """One line about the class shown to model judges ("" = none)."""
    criteria: tuple[Criterion, ...]

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.criteria]

    def get(self, cid: str) -> Criterion:
        return next(c for c in self.criteria if c.id == cid)


@dataclasses.dataclass(frozen=True)
class CriteriaFile:
    """A parsed, validated criteria file."""

    path: Path
    name: str
    version: str
    subject: str
    """What the images are, for the judge's prompt ("medical image" by default)."""
    measurer: str
    """``derm``, ``cxr`` or ``none``: which pixel measurer the offline judge uses."""
    field_of_view_mm: float | None
    """Field of view (mm across the image width) when the images carry no pixel size."""
    validity: str
    """The statement that makes an image a valid one at all (the judge's ``image_valid``)."""
    system: str
    """System text for model judges ("" = the default)."""
    instructions: str
    """Extra instructions appended to the model judge's prompt ("" = none)."""
    classes: dict[str, ClassCriteria]
    sha256: str
    """sha256 of the file's bytes: the criteria's identity."""
    text: str
    """The file's content, verbatim (copied into judged folders)."""
    real_invalid_share: float | None = None
    """Share of real images of this modality the offline judge calls invalid (measured with
    ``medsynth judge validate``); a judged set far above it gets a warning that the measurers
    were not made for its images. None = not measured."""

    @property
    def full_version(self) -> str:
        """``name@version+sha256[:8]``: any edit is a new version."""
        return f"{self.name}@{self.version}+{self.sha256[:8]}"

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def for_class(self, cls: str) -> ClassCriteria:
        """The checklist of ``cls`` (a one-line error naming the file when there is none)."""
        if cls not in self.classes:
            raise MedsynthError(f"{self.path}: no criteria for class {cls!r} (the file has "
                                f"{', '.join(self.classes)})")
        return self.classes[cls]

    def all_ids(self) -> list[str]:
        """Every criterion id, in file order, each once (scores.csv columns)."""
        seen: dict[str, None] = {}
        for cc in self.classes.values():
            for c in cc.criteria:
                seen.setdefault(c.id)
        return list(seen)

    def check_classes(self, available: Iterable[str], what: str, *,
                      require_all: bool = True) -> None:
        """Refuse criteria for classes ``what`` does not have, and (``require_all``) classes of
        ``what`` that have no criteria, with one line naming the file."""
        have = list(dict.fromkeys(str(c) for c in available))
        extra = [c for c in self.classes if c not in have]
        if extra:
            raise MedsynthError(f"{self.path}: class(es) {', '.join(map(repr, extra))} not in "
                                f"{what} (it has {', '.join(have)})",
                                hint="criteria must name the classes exactly as the model does")
        missing = [c for c in have if c not in self.classes]
        if require_all and missing:
            raise MedsynthError(f"{self.path}: no criteria for class(es) "
                                f"{', '.join(map(repr, missing))} of {what}",
                                hint="add a checklist for every class the set holds")


def builtin_path(name: str) -> Path:
    """The path of a shipped criteria file (``derm``, ``cxr`` or ``template``)."""
    p = BUILTIN_DIR / f"{name}.yaml"
    if not p.is_file():
        raise MedsynthError(f"no shipped criteria named {name!r} (shipped: "
                            f"{', '.join(sorted(q.stem for q in BUILTIN_DIR.glob('*.yaml')))})")
    return p


def resolve_path(spec: str | os.PathLike[str]) -> Path:
    """A criteria file path, or the name of a shipped one (``derm``, ``cxr``)."""
    p = Path(spec)
    if p.is_file():
        return p
    if isinstance(spec, str) and not p.suffix and os.sep not in spec and (
            BUILTIN_DIR / f"{spec}.yaml").is_file():
        return builtin_path(spec)
    raise MedsynthError(f"{spec}: criteria file not found",
                        hint=f"give a YAML file, or a shipped name: {', '.join(BUILTIN)}")


def load_criteria(spec: str | os.PathLike[str]) -> CriteriaFile:
    """Read and validate a criteria file (a path, or a shipped name such as ``derm``)."""
    path = resolve_path(spec)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MedsynthError(f"{path}: cannot read ({e.strerror})") from e
    return parse_criteria(data, path)


def _text(v: Any) -> str:
    return "" if v is None else " ".join(str(v).split())


Text = Annotated[str, BeforeValidator(_text)]
"""Any scalar as one line of text (``version: 2`` is ``"2"``)."""
Labels = Annotated[tuple[str, ...], BeforeValidator(
    lambda v: (str(v),) if isinstance(v, (str, int, float)) else
    tuple(str(x) for x in v) if isinstance(v, list) else v), Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Measure(_Model):
    attribute: Text = ""
    min: float | None = None
    max: float | None = None
    values: Labels | None = None
    any_of: Labels | None = None
    none_of: Labels | None = None


class _Criterion(_Model):
    id: Text = ""
    text: Text = ""
    weight: float = 1.0
    measure: _Measure | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if v and not _ID.match(v):
            raise ValueError(f"id {v!r} must start with a letter and hold only letters, digits "
                             "and _")
        return v

    @field_validator("weight", mode="before")
    @classmethod
    def _weight(cls, v: Any) -> Any:
        if not (isinstance(v, (int, float)) and not isinstance(v, bool)) \
                or not 0 < float(v) < float("inf"):
            raise ValueError(f"weight must be a positive number, got {v!r}")
        return float(v)

    @model_validator(mode="after")
    def _given(self) -> Self:
        if not self.id:
            raise ValueError("'id' is missing")
        if not self.text:
            raise ValueError("has no text (the statement shown to the judge)")
        return self


class _Class(_Model):
    description: Text = ""
    criteria: list[_Criterion]

    @model_validator(mode="before")
    @classmethod
    def _listed(cls, v: Any) -> Any:
        items = v.get("criteria") if isinstance(v, dict) else None
        if not isinstance(items, list) or not items:
            raise ValueError("needs a non-empty list of criteria")
        return v


class _File(_Model):
    """The shape of a criteria file (docs/judge.md); what depends on the measurer is checked
    after it."""

    name: Annotated[Text, Field(min_length=1)]
    version: Text = "1"
    subject: Text = ""
    measurer: Annotated[Measurer, BeforeValidator(lambda v: _text(v) or "none")] = "none"
    field_of_view_mm: Annotated[float, Field(gt=0)] | None = None
    validity: Text = ""
    system: Text = ""
    instructions: Text = ""
    real_invalid_share: Annotated[float, Field(ge=0, le=1)] | None = None
    classes: Annotated[dict[Text, Annotated[_Class, BeforeValidator(
        lambda v: {"criteria": v} if isinstance(v, list) or v is None else v)]],
        Field(min_length=1)]


_NAMES = {"classes": "'classes'", "name": "'name'", "criteria": "the list of criteria"}


def _where(raw: Any, loc: tuple[int | str, ...]) -> str:
    """``class 'a', criterion 'dark': `` for a location in the file (the criterion by its id
    where it has one, else by its position)."""
    if len(loc) < 2 or loc[0] != "classes":
        return ""
    cname = str(loc[1])
    where = f"class {cname!r}"
    if len(loc) >= 4 and loc[2] == "criteria" and isinstance(loc[3], int):
        body = raw["classes"][loc[1]]
        items = body.get("criteria") if isinstance(body, dict) else body
        item = items[loc[3]] if isinstance(items, list) else None
        cid = _text(item.get("id")) if isinstance(item, dict) else ""
        by_id = _ID.match(cid) and not (len(loc) > 4 and loc[4] == "id")
        where += f", criterion {cid!r}" if by_id else f", criterion {loc[3] + 1}"
        if len(loc) > 4 and loc[4] == "measure":
            where += ", measure"
    return where + ": "


def _key(loc: tuple[int | str, ...]) -> str:
    names = [p for p in loc if isinstance(p, str)]
    if not names or loc[-1] in ("classes",) and len(loc) > 1:
        return ""
    return _NAMES.get(names[-1], names[-1])


def parse_criteria(data: bytes, path: str | os.PathLike[str] = "<criteria>") -> CriteriaFile:
    """Validate a criteria file's bytes; every problem is one line naming ``path``."""
    import yaml

    from medsynth.recipe import one_line

    path = Path(path)

    def bad(msg: str) -> MedsynthError:
        return MedsynthError(f"{path}: {msg}", hint="the format is described in docs/judge.md")

    try:
        text = data.decode("utf-8")
        raw = yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise bad(f"not valid YAML ({first})") from e
    if not isinstance(raw, dict):
        raise bad("expected a mapping with name, version and classes")
    try:
        f = _File.model_validate(raw)
    except ValidationError as e:
        msg, unknown = one_line(e, _key, lambda loc: _where(raw, loc))
        if unknown is not None:
            level = _File if not unknown else _Measure if "measure" in unknown else \
                _Criterion if len(unknown) > 3 else _Class
            msg += f" (allowed: {', '.join(sorted(level.model_fields))})"
        raise bad(msg) from None
    classes = {cname: _class(cname, body, f.measurer, bad) for cname, body in f.classes.items()}
    return CriteriaFile(
        path=path, name=f.name, version=f.version or "1", subject=f.subject or "medical image",
        measurer=f.measurer, field_of_view_mm=f.field_of_view_mm,
        validity=f.validity or "The image is a plausible medical image of the kind described.",
        system=f.system, instructions=f.instructions, classes=classes,
        sha256=hashlib.sha256(data).hexdigest(), text=text,
        real_invalid_share=f.real_invalid_share)


def _class(cname: str, body: _Class, measurer: str, bad: Any) -> ClassCriteria:
    """The checks that need more than one key: unique ids, rules the measurer can apply."""
    seen: set[str] = set()
    criteria = []
    for item in body.criteria:
        where = f"class {cname!r}, criterion {item.id!r}"
        if item.id in seen:
            raise bad(f"class {cname!r}: duplicate criterion id {item.id!r}")
        seen.add(item.id)
        rule = _rule(item.measure, measurer, where, bad) if item.measure is not None else None
        criteria.append(Criterion(id=item.id, text=item.text, weight=item.weight, measure=rule))
    return ClassCriteria(name=cname, description=body.description, criteria=tuple(criteria))


def _rule(m: _Measure, measurer: str, where: str, bad: Any) -> MeasureRule:
    allowed = MEASURED_ATTRIBUTES[measurer]
    if measurer == "none":
        raise bad(f"{where}: has a measure rule but the file's measurer is 'none'")
    if m.attribute not in allowed:
        raise bad(f"{where}: the {measurer} measurer has no attribute {m.attribute!r} (it "
                  f"measures {', '.join(allowed)})")
    conds = {k for k in CONDITIONS if getattr(m, k) is not None}
    if not conds:
        raise bad(f"{where}: measure needs a condition ({', '.join(CONDITIONS)})")
    is_list = m.attribute in LIST_ATTRIBUTES
    if is_list and {"min", "max", "values"} & conds:
        raise bad(f"{where}: {m.attribute} is a list; use any_of or none_of")
    if not is_list and {"any_of", "none_of"} & conds:
        raise bad(f"{where}: {m.attribute} is not a list; use min/max or values")
    if "values" in conds and {"min", "max"} & conds:
        raise bad(f"{where}: measure takes values or min/max, not both")
    if m.min is not None and m.max is not None and m.min > m.max:
        raise bad(f"{where}: measure min {m.min:g} is above max {m.max:g}")
    return MeasureRule(attribute=m.attribute, min=m.min, max=m.max, values=m.values or (),
                       any_of=m.any_of or (), none_of=m.none_of or ())


def criteria_schema(cc: ClassCriteria) -> dict[str, Any]:
    """The JSON schema of a model judge's answer for one class: ``image_valid`` and one verdict
    object per criterion id, every id required, nothing else allowed."""
    verdict = {"type": "object",
               "properties": {"verdict": {"type": "string", "enum": list(VERDICTS)},
                              "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                              "rationale": {"type": "string"}},
               "required": ["verdict", "confidence", "rationale"],
               "additionalProperties": False}
    return {"type": "object",
            "properties": {"image_valid": {"type": "boolean"},
                           "criteria": {"type": "object",
                                        "properties": {cid: verdict for cid in cc.ids},
                                        "required": cc.ids, "additionalProperties": False}},
            "required": ["image_valid", "criteria"], "additionalProperties": False}



def rule_verdict(rule: MeasureRule, value: Any) -> tuple[str, float]:
    """(verdict, confidence) of one measured value against a rule.

    ``value`` None (not measurable in this image) is ``unsure``. Numeric conditions get a
    confidence that grows with the distance from the nearest bound (0.5 on the bound, 1 at 20 %
    of the bound's size away); categorical ones are certain given the measurement.
    """
    if value is None:
        return "unsure", 0.0
    if rule.attribute in LIST_ATTRIBUTES:
        have = set(_as_list(value))
        ok = True
        if rule.any_of:
            ok &= bool(have & set(rule.any_of))
        if rule.none_of:
            ok &= not (have & set(rule.none_of))
        return ("met" if ok else "not_met"), 1.0
    if rule.values:
        return ("met" if str(value) in rule.values else "not_met"), 1.0
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "unsure", 0.0
    margins = []
    if rule.min is not None:
        margins.append((x - rule.min, rule.min))
    if rule.max is not None:
        margins.append((rule.max - x, rule.max))
    ok = all(m >= 0 for m, _ in margins)
    # the bound that decides: the violated one, else the closest
    m, bound = min(margins, key=lambda t: t[0])
    scale = max(abs(bound) * 0.2, 1e-6)
    conf = 0.5 + 0.5 * min(1.0, abs(m) / scale)
    return ("met" if ok else "not_met"), round(conf, 3)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in value.split(";") if v and v != "none"]
    if isinstance(value, (list, tuple, set)):
        return [str(v) for v in value]
    return [str(value)]


def weighted_score(cc: ClassCriteria, verdicts: Mapping[str, str], image_valid: bool,
                   checkable: Iterable[str] | None = None) -> float:
    """Weighted share of the criteria met (0 for an invalid image).

    ``checkable``: the criteria the judge can check at all (the offline judge: those with a
    measure rule); the others leave the denominator instead of counting as failed. None = all.
    """
    if not image_valid:
        return 0.0
    ids = set(cc.ids if checkable is None else checkable)
    total = sum(c.weight for c in cc.criteria if c.id in ids)
    if total <= 0:
        return 0.0
    met = sum(c.weight for c in cc.criteria if c.id in ids and verdicts.get(c.id) == "met")
    return round(met / total, 6)
