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
from typing import Any

from medsynth.errors import MedsynthError

BUILTIN_DIR = Path(__file__).resolve().parent / "criteria_files"
"""Criteria files shipped with medsynth (``derm``, ``cxr``, ``template``)."""
BUILTIN = ("derm", "cxr")
"""Shipped criteria for the demo classes (``template.yaml`` is the start of your own)."""
MEASURERS = ("derm", "cxr", "none")
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
_TOP_KEYS = {"name", "version", "subject", "measurer", "field_of_view_mm", "validity", "system",
             "instructions", "classes", "real_invalid_share"}
_CLASS_KEYS = {"description", "criteria"}
_CRITERION_KEYS = {"id", "text", "weight", "measure"}
_MEASURE_KEYS = {"attribute", *CONDITIONS}


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


def parse_criteria(data: bytes, path: str | os.PathLike[str] = "<criteria>") -> CriteriaFile:
    """Validate a criteria file's bytes; every problem is one line naming ``path``."""
    import yaml

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
    unknown = sorted(set(map(str, raw)) - _TOP_KEYS)
    if unknown:
        raise bad(f"unknown key(s) {unknown} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    name = _text(raw.get("name"))
    if not name:
        raise bad("'name' is missing or empty")
    version = _text(raw.get("version", "1")) or "1"
    measurer = _text(raw.get("measurer", "none")) or "none"
    if measurer not in MEASURERS:
        raise bad(f"measurer {measurer!r} is not one of {', '.join(MEASURERS)}")
    fov = raw.get("field_of_view_mm")
    if fov is not None and (not _is_number(fov) or float(fov) <= 0):
        raise bad(f"field_of_view_mm must be a positive number, got {fov!r}")
    share = raw.get("real_invalid_share")
    if share is not None and (not _is_number(share) or not 0 <= float(share) <= 1):
        raise bad(f"real_invalid_share must be a number in [0, 1], got {share!r}")
    classes_raw = raw.get("classes")
    if not isinstance(classes_raw, dict) or not classes_raw:
        raise bad("'classes' must map each class name to its criteria")
    classes: dict[str, ClassCriteria] = {}
    for cname, body in classes_raw.items():
        cname = str(cname)
        classes[cname] = _parse_class(cname, body, measurer, bad)
    return CriteriaFile(
        path=path, name=name, version=version,
        subject=_text(raw.get("subject")) or "medical image", measurer=measurer,
        field_of_view_mm=float(fov) if fov is not None else None,
        validity=_text(raw.get("validity")) or "The image is a plausible medical image of the "
                                               "kind described.",
        system=_text(raw.get("system")), instructions=_text(raw.get("instructions")),
        classes=classes, sha256=hashlib.sha256(data).hexdigest(), text=text,
        real_invalid_share=float(share) if share is not None else None)


def _parse_class(cname: str, body: Any, measurer: str, bad: Any) -> ClassCriteria:
    description = ""
    items = body
    if isinstance(body, dict):
        unknown = sorted(set(map(str, body)) - _CLASS_KEYS)
        if unknown:
            raise bad(f"class {cname!r}: unknown key(s) {unknown} (allowed: description, "
                      "criteria)")
        description = _text(body.get("description"))
        items = body.get("criteria")
    if not isinstance(items, list) or not items:
        raise bad(f"class {cname!r}: needs a non-empty list of criteria")
    seen: set[str] = set()
    criteria = []
    for k, item in enumerate(items, 1):
        where = f"class {cname!r}, criterion {k}"
        if not isinstance(item, dict):
            raise bad(f"{where}: expected a mapping with id and text")
        unknown = sorted(set(map(str, item)) - _CRITERION_KEYS)
        if unknown:
            raise bad(f"{where}: unknown key(s) {unknown} (allowed: "
                      f"{', '.join(sorted(_CRITERION_KEYS))})")
        cid = _text(item.get("id"))
        if not cid:
            raise bad(f"{where}: 'id' is missing")
        if not _ID.match(cid):
            raise bad(f"{where}: id {cid!r} must start with a letter and hold only letters, "
                      "digits and _")
        where = f"class {cname!r}, criterion {cid!r}"
        if cid in seen:
            raise bad(f"class {cname!r}: duplicate criterion id {cid!r}")
        seen.add(cid)
        text = _text(item.get("text"))
        if not text:
            raise bad(f"{where}: has no text (the statement shown to the judge)")
        weight = item.get("weight", 1.0)
        if not _is_number(weight) or not 0 < float(weight) < float("inf"):
            raise bad(f"{where}: weight must be a positive number, got {weight!r}")
        rule = None
        if item.get("measure") is not None:
            rule = _parse_rule(item["measure"], measurer, where, bad)
        criteria.append(Criterion(id=cid, text=text, weight=float(weight), measure=rule))
    return ClassCriteria(name=cname, description=description, criteria=tuple(criteria))


def _parse_rule(raw: Any, measurer: str, where: str, bad: Any) -> MeasureRule:
    if not isinstance(raw, dict):
        raise bad(f"{where}: 'measure' must be a mapping with attribute and a condition")
    unknown = sorted(set(map(str, raw)) - _MEASURE_KEYS)
    if unknown:
        raise bad(f"{where}: unknown measure key(s) {unknown} (allowed: "
                  f"{', '.join(sorted(_MEASURE_KEYS))})")
    attr = _text(raw.get("attribute"))
    allowed = MEASURED_ATTRIBUTES[measurer]
    if measurer == "none":
        raise bad(f"{where}: has a measure rule but the file's measurer is 'none'")
    if attr not in allowed:
        raise bad(f"{where}: the {measurer} measurer has no attribute {attr!r} (it measures "
                  f"{', '.join(allowed)})")
    conds = [k for k in CONDITIONS if raw.get(k) is not None]
    if not conds:
        raise bad(f"{where}: measure needs a condition ({', '.join(CONDITIONS)})")
    for k in ("min", "max"):
        if raw.get(k) is not None and not _is_number(raw[k]):
            raise bad(f"{where}: measure {k} must be a number, got {raw[k]!r}")
    lists: dict[str, tuple[str, ...]] = {}
    for k in ("values", "any_of", "none_of"):
        v = raw.get(k)
        if v is None:
            continue
        v = [v] if isinstance(v, (str, int, float)) else v
        if not isinstance(v, list) or not v:
            raise bad(f"{where}: measure {k} must be a non-empty list")
        lists[k] = tuple(str(x) for x in v)
    is_list = attr in LIST_ATTRIBUTES
    if is_list and ({"min", "max", "values"} & set(conds)):
        raise bad(f"{where}: {attr} is a list; use any_of or none_of")
    if not is_list and ({"any_of", "none_of"} & set(conds)):
        raise bad(f"{where}: {attr} is not a list; use min/max or values")
    if "values" in conds and ({"min", "max"} & set(conds)):
        raise bad(f"{where}: measure takes values or min/max, not both")
    lo, hi = raw.get("min"), raw.get("max")
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise bad(f"{where}: measure min {lo} is above max {hi}")
    return MeasureRule(attribute=attr, min=float(lo) if lo is not None else None,
                       max=float(hi) if hi is not None else None, **lists)


def _text(v: Any) -> str:
    return "" if v is None else " ".join(str(v).split())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
