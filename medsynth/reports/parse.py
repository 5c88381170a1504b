"""Read back the attributes a report (or any description) states, per report family.

Used three ways: to give the template writer the attributes of a free-text ``--prompt``; to
check a model-written report against the conditioning (no finding it did not ask for, nothing
contradicting it); and by evaluate, which compares what a report states with what is measured
on its image. Only what the text states explicitly is returned; the rest stays unknown. The
template writer's reports read back exactly (tested); describe's template sentences too.
"""

from __future__ import annotations

import re
from typing import Any

from medsynth.reports.base import parse_sections

_COLORS = {"light_brown": r"light[- ]brown|\btan\b", "dark_brown": r"dark[- ]brown",
           "black": r"\bblack", "blue_grey": r"blue[- ]?gr[ae]y|bluish[- ]gr[ae]y",
           "red": r"\bred\b|\bpink", "white": r"\bwhite\b"}
_STRUCTURES = {"pigment_network": r"pigment(?:ed)? network|reticular",
               "dots_globules": r"dots?(?: and |/)globules?|\bglobules\b|\bdots\b",
               "streaks": r"\bstreaks?\b|pseudopods?",
               "blue_white_veil": r"blue[- ]white(?:ish)? veil"}
_NONE_STRUCT = r"no (?:specific |distinct )?(?:dermoscopic )?structures?"
_NONE_COLOR = r"no distinct colou?r"


def _section(rep: Any, *titles: str) -> str | None:
    for t in titles:
        s = rep.section(t)
        if s is not None:
            return s
    return None


def parse_report(family: str, text: str) -> dict[str, Any]:
    """The attributes ``text`` states, in :func:`medsynth.reports.base.normalize` form."""
    text = str(text or "")
    if family == "derm":
        return _derm(text)
    if family == "cxr":
        return _cxr(text)
    if family == "prostate":
        return _prostate(text)
    return {}


def _derm(text: str) -> dict[str, Any]:
    rep = parse_sections(text)
    low = text.lower()
    out: dict[str, Any] = {}
    if re.search(r"no whole lesion", low):
        return {"lesion": "none"}
    size = _section(rep, "LESION SIZE", "SIZE")
    m = re.search(r"(\d+(?:\.\d+)?)\s*mm", (size if size is not None else text).lower())
    if m:
        out["diameter_mm"] = round(float(m.group(1)), 1)
    asym = (_section(rep, "ASYMMETRY", "SHAPE") or low).lower()
    if re.search(r"asymmetric(?:al)? (?:about|along|in|on) (?:both|two) axes|"
                 r"asymmetric \(both axes\)", asym):
        out["asymmetry"] = 2
    elif re.search(r"asymmetric(?:al)? (?:about|along|in|on) (?:one|a single) axis|"
                   r"asymmetric \(one axis\)", asym):
        out["asymmetry"] = 1
    elif re.search(r"(?<!a)symmetric", asym):
        out["asymmetry"] = 0
    border = (_section(rep, "BORDER") or low).lower()
    if re.search(r"\birregular", border):
        out["border"] = "irregular"
    elif re.search(r"\bregular", border):
        out["border"] = "regular"
    # Colours: the colour section, else the whole text without structure names holding colours.
    col = _section(rep, "COLOURS", "COLORS")
    ctext = (col if col is not None else re.sub(_STRUCTURES["blue_white_veil"], " ", low)).lower()
    if not (col is not None and re.match(r"\s*not assessed", ctext)):
        if re.search(_NONE_COLOR, ctext):
            out["colors"] = []
        else:
            found = [c for c, pat in _COLORS.items() if re.search(pat, ctext)]
            if found:
                out["colors"] = found
    st = _section(rep, "STRUCTURES")
    stext = (st if st is not None else low).lower()
    if not (st is not None and re.match(r"\s*not assessed", stext)):
        if re.search(_NONE_STRUCT, stext):
            out["structures"] = []
        else:
            found = [s for s, pat in _STRUCTURES.items() if re.search(pat, stext)]
            if found:
                out["structures"] = found
    return out


def _cxr(text: str) -> dict[str, Any]:
    rep = parse_sections(text)
    findings = _section(rep, "FINDINGS") or text
    low = findings.lower()
    out: dict[str, Any] = {}
    lung = re.split(r"cardiothoracic|heart|cardiac", low)[0] if re.search(
        r"lung|opacit|consolidat|effusion", low) else low
    if re.search(r"\bbilateral\b|both lungs|both sides", lung):
        out["side"] = "bilateral"
    else:
        sides = [(m.start(), m.group(1)) for m in re.finditer(r"\b(left|right)\b", lung)]
        if sides:
            out["side"] = min(sides)[1]
        elif re.search(r"lungs are clear|clear lung|no focal (?:lung )?opacit|"
                       r"no (?:acute )?(?:airspace )?(?:opacity|consolidation)", lung):
            out["side"] = "none"
    m = re.search(r"\b(upper|middle|mid|lower)[- ]zone", lung) or \
        re.search(r"\(?(upper|middle|lower) zone", lung)
    if m and out.get("side") != "none":
        out["zone"] = {"mid": "middle"}.get(m.group(1), m.group(1))
    m = re.search(r"(\d+(?:\.\d+)?)\s*%\s*of the (?:affected )?lung", lung)
    if m and out.get("side") != "none":
        out["opacity_extent"] = round(float(m.group(1)) / 100, 2)
    m = re.search(r"cardiothoracic ratio(?: is| of|:)?\s*(0?\.\d+)", low)
    if m:
        out["ctr"] = round(float(m.group(1)), 2)
    if re.search(r"heart (?:is )?enlarged|enlarged (?:cardiac|heart)|cardiac silhouette is "
                 r"enlarged|cardiomegaly|heart size enlarged", low):
        out["heart_size"] = "enlarged"
    elif re.search(r"heart (?:size )?(?:is )?normal|normal heart size|heart normal in size|"
                   r"heart is normal in size|normal cardiac", low):
        out["heart_size"] = "normal"
    return out


def _prostate(text: str) -> dict[str, Any]:
    rep = parse_sections(text)
    low = text.lower()
    findings = (_section(rep, "FINDINGS") or text).lower()
    out: dict[str, Any] = {}
    m = re.search(r"pi-?rads(?:-like)?(?: category| score| v2\.1)?[: ]*([1-5])\b", low)
    if m:
        out["pirads"] = int(m.group(1))
    m = re.search(r"prostate volume (?:of |is )?(\d+(?:\.\d+)?)\s*ml", low)
    if m:
        out["gland_volume_ml"] = round(float(m.group(1)))
    if re.search(r"no focal lesion|without a focal lesion|no lesion", findings):
        out["zone"] = "none"
        return out
    m = re.search(r"\b(peripheral|transition|central)(?: zone)?", findings)
    if m:
        out["zone"] = m.group(1)
    m = re.search(r"\b(left|right|bilateral)\b", findings)
    if m:
        out["side"] = m.group(1)
    m = re.search(r"\b(base|mid-gland|midgland|mid gland|apex)\b", findings)
    if m:
        out["level"] = {"base": "base", "apex": "apex"}.get(m.group(1), "mid")
    m = re.search(r"(\d+(?:\.\d+)?)\s*mm", findings)
    if m:
        out["size_mm"] = round(float(m.group(1)))
    if re.search(r"ill[- ]defined", findings):
        out["margin"] = "ill_defined"
    elif re.search(r"circumscribed", findings):
        out["margin"] = "circumscribed"
    if re.search(r"hypointens", findings):
        out["signal"] = "hypointense"
    if re.search(r"without extraprostatic|no extraprostatic", findings):
        out["extraprostatic_extension"] = "no"
    elif re.search(r"extraprostatic extension", findings):
        out["extraprostatic_extension"] = "yes"
    return out
