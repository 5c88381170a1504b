"""What a report is, what a writer is given, and the attributes it may state.

A :class:`Report` is a list of titled sections (FINDINGS, IMPRESSION, ...); its text is what
ships beside the image (``reports/<class>/<id>.txt``), in the DICOM Structured Report and in the
loaders' metadata. A writer turns :class:`ReportContext` items (class, conditioning attributes,
description, seed, optionally the image) into :class:`ReportResult` items, one each, in order.

Attributes are normalised per report family (:func:`normalize`): values a describer could not
judge (``not_visible``, ``uncertain``), empty cells and NaN are dropped, so a writer states only
what the conditioning asked for.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from medsynth.vocabulary import DERM_COLORS, DERM_STRUCTURES

FAMILIES = ("cxr", "derm", "prostate", "generic")
"""Report styles: chest radiograph (FINDINGS + IMPRESSION), dermoscopy (structured description),
prostate MRI (zone, size, PI-RADS-like grade) and a generic one for anything else."""
UNKNOWN = ("not_visible", "uncertain", "", "nan", "none_given")

CXR_SIDES = ("left", "right", "bilateral", "none")
CXR_ZONES = ("upper", "middle", "lower")
PROSTATE_ZONES = ("peripheral", "transition", "central", "anterior_stroma")
PROSTATE_LEVELS = ("base", "mid", "apex")


@dataclasses.dataclass
class Report:
    """A report: ordered ``(title, text)`` sections."""

    sections: list[tuple[str, str]]

    @property
    def text(self) -> str:
        """The report as plain text: ``TITLE:`` lines followed by their text, blank-line separated."""
        return "\n\n".join(f"{t.upper()}:\n{s.strip()}" for t, s in self.sections).strip() + "\n"

    def section(self, title: str) -> str | None:
        """The text of the section called ``title`` (case-insensitive), or None."""
        for t, s in self.sections:
            if t.lower() == title.lower():
                return s
        return None


_HEADING = re.compile(r"^\s*([A-Z][A-Z /&-]{2,40})\s*:\s*(.*)$")


def parse_sections(text: str) -> Report:
    """A report's sections from its text (``TITLE:`` lines in upper case start a section).

    Text before the first heading becomes a section titled ``TEXT``; a heading followed by text
    on the same line keeps it.
    """
    sections: list[tuple[str, list[str]]] = []
    for line in str(text or "").splitlines():
        m = _HEADING.match(line)
        if m:
            sections.append((m.group(1).strip(), [m.group(2)] if m.group(2).strip() else []))
        elif line.strip():
            if not sections:
                sections.append(("TEXT", []))
            sections[-1][1].append(line.strip())
    return Report([(t, " ".join(x.strip() for x in lines).strip()) for t, lines in sections])


@dataclasses.dataclass
class ReportContext:
    """What a writer knows about one image: the conditioning, never anything more."""

    sample_id: str
    """The image's id (logs and warnings name it)."""
    cls: str
    """The class the image was generated for."""
    family: str
    """Report style, one of :data:`FAMILIES`."""
    attributes: dict[str, Any]
    """The conditioning attributes, normalised (:func:`normalize`): only what was asked for."""
    description: str = ""
    """The text the image was conditioned on ("" = class only)."""
    seed: int = 0
    """The image's seed: the template writer's phrasing is drawn from it."""
    image: Any = None
    """The generated image (channel-first array), for writers that look at it."""
    modality: str = ""
    """DICOM modality code of the model (DX, XC, MR, ...)."""
    carry_prompt: bool = False
    """The attributes were read from the free-text ``description`` and it states more than
    could be read reliably: the report carries the text itself (section ``PROMPT``)."""


@dataclasses.dataclass
class ReportResult:
    """One written report and how it was written."""

    report: Report
    writer: str
    """Who wrote it: ``template``, ``llm`` (the model's answer) or ``template-fallback`` (the
    model's answers stayed invalid: the template report was used)."""
    warning: str = ""
    """Why a fallback happened ("" when none)."""
    raw: list[str] = dataclasses.field(default_factory=list)
    """The model's raw answers, re-asks included (empty for the template writer)."""

    @property
    def text(self) -> str:
        return self.report.text


@runtime_checkable
class ReportWriter(Protocol):
    """Turns contexts into reports; one result per context, in order."""

    name: str
    """``template`` or ``llm``."""

    def write(self, contexts: Sequence[ReportContext]) -> list[ReportResult]: ...

    def info(self) -> dict[str, Any]:
        """Settings for the manifest (never a secret)."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------- families
def report_family(modality: str = "", classes: Sequence[str] = (),
                  attributes: dict[str, Any] | None = None) -> str:
    """The report style for a model/dataset: from its attributes, class names and modality."""
    keys = set(attributes or {})
    names = " ".join(str(c).lower() for c in classes)
    mod = str(modality or "").upper()
    if {"pirads", "gland_volume_ml", "extraprostatic_extension"} & keys or "pirads" in names \
            or "prostate" in names or (mod == "MR" and "zone" in keys):
        return "prostate"
    if {"ctr", "opacity_extent", "heart_size"} & keys or mod in ("DX", "CR"):
        return "cxr"
    if {"colors", "border", "asymmetry", "structures"} & keys or mod == "XC":
        return "derm"
    if mod == "MR":
        return "prostate" if re.search(r"lesion|pi-?rads|prostat", names) else "generic"
    return "generic"


def _known(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, float) and math.isnan(v):
        return False
    return not (isinstance(v, str) and v.strip().lower() in UNKNOWN)


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _items(v: Any, vocab: Sequence[str]) -> list[str] | None:
    """A multi-valued attribute (list or ``a;b`` string) in canonical order; [] = none."""
    if isinstance(v, str):
        parts = [p.strip() for p in v.split(";")]
    elif isinstance(v, (list, tuple)):
        parts = [str(p).strip() for p in v]
    else:
        return None
    parts = [p.lower().replace(" ", "_").replace("-", "_") for p in parts if p]
    if any(p in ("not_visible", "uncertain") for p in parts):
        return None
    return [x for x in vocab if x in parts]


def normalize(family: str, attrs: dict[str, Any] | None) -> dict[str, Any]:
    """The attributes a writer may state, in canonical form, for ``family``.

    Unknown values (``not_visible``, ``uncertain``, empty, NaN) are dropped. derm: diameter_mm,
    asymmetry (0-2), border, colors, structures (lists; [] = none), lesion (``none`` when every
    lesion attribute is ``not_visible``). cxr: side, zone, opacity_extent, ctr, heart_size.
    prostate: pirads, zone, side, level, size_mm (``diameter_mm`` or ``size_mm``), signal,
    t2_hypointensity, margin, extraprostatic_extension, gland_volume_ml.
    """
    a = {k: v for k, v in (attrs or {}).items() if _known(v) or isinstance(v, list)}
    out: dict[str, Any] = {}
    if family == "derm":
        raw = attrs or {}
        lesion_keys = ("diameter_mm", "asymmetry", "border", "colors", "structures")
        def nv(v: Any) -> bool:
            vals = v if isinstance(v, (list, tuple)) else [v]
            return bool(vals) and all(str(x).lower() == "not_visible" for x in vals)

        if raw and all(nv(raw.get(k, "")) for k in lesion_keys):
            return {"lesion": "none"}
        if (x := _num(a.get("diameter_mm"))) is not None and x > 0:
            out["diameter_mm"] = round(x, 1)
        if (x := _num(a.get("asymmetry"))) is not None and int(x) in (0, 1, 2):
            out["asymmetry"] = int(x)
        if str(a.get("border", "")).lower() in ("regular", "irregular"):
            out["border"] = str(a["border"]).lower()
        for k, vocab in (("colors", DERM_COLORS), ("structures", DERM_STRUCTURES)):
            if k in a and (items := _items(a[k], vocab)) is not None:
                out[k] = items
    elif family == "cxr":
        if str(a.get("side", "")).lower() in CXR_SIDES:
            out["side"] = str(a["side"]).lower()
        if str(a.get("zone", "")).lower() in CXR_ZONES and out.get("side") != "none":
            out["zone"] = str(a["zone"]).lower()
        if (x := _num(a.get("opacity_extent"))) is not None and out.get("side") != "none" \
                and 0 < x <= 1:
            out["opacity_extent"] = round(x, 2)
        if (x := _num(a.get("ctr"))) is not None and 0.2 <= x <= 0.95:
            out["ctr"] = round(x, 2)
        if str(a.get("heart_size", "")).lower() in ("normal", "enlarged"):
            out["heart_size"] = str(a["heart_size"]).lower()
        elif "ctr" in out:
            out["heart_size"] = "enlarged" if out["ctr"] > 0.5 else "normal"
    elif family == "prostate":
        if (x := _num(a.get("pirads"))) is not None and 1 <= int(x) <= 5:
            out["pirads"] = int(x)
        zone = str(a.get("zone", "")).lower()
        if zone in (*PROSTATE_ZONES, "none"):
            out["zone"] = zone
        if out.get("zone") != "none":
            if str(a.get("side", "")).lower() in ("left", "right", "bilateral"):
                out["side"] = str(a["side"]).lower()
            if str(a.get("level", "")).lower() in PROSTATE_LEVELS:
                out["level"] = str(a["level"]).lower()
            size = _num(a.get("size_mm", a.get("diameter_mm")))
            if size is not None and size > 0:
                out["size_mm"] = round(size)
            if (x := _num(a.get("t2_hypointensity"))) is not None and x > 0:
                out["t2_hypointensity"] = round(x, 2)
                out["signal"] = "hypointense"
            if str(a.get("signal", "")).lower() in ("hypointense", "isointense", "hyperintense"):
                out["signal"] = str(a["signal"]).lower()
            if str(a.get("margin", "")).lower() in ("circumscribed", "ill_defined"):
                out["margin"] = str(a["margin"]).lower()
            epe = str(a.get("extraprostatic_extension", "")).lower()
            if epe in ("yes", "no", "true", "false"):
                out["extraprostatic_extension"] = "yes" if epe in ("yes", "true") else "no"
        if (x := _num(a.get("gland_volume_ml"))) is not None and x > 0:
            out["gland_volume_ml"] = round(x)
    return out


def flat_text(text: str) -> str:
    """Free text on one line, its own ``TITLE:`` headings kept as words ("Findings: ...") so
    that it cannot open a section of the report it is put in."""
    parts = []
    for title, body in parse_sections(text).sections:
        if title != "TEXT":
            parts.append(f"{title.capitalize()}:")
        parts.append(body)
    return " ".join(" ".join(parts).split())


def class_phrase(cls: str) -> str:
    """A class name as words (``pleural_effusion`` -> ``pleural effusion``)."""
    return re.sub(r"[_\-]+", " ", str(cls)).strip()
