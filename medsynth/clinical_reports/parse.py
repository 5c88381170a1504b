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

from medsynth.clinical_reports.base import parse_sections

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
    """The attributes ``text`` states, in :func:`medsynth.clinical_reports.base.normalize` form."""
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


# chest radiograph: what a lung opacity is, what else a report can state, where a side or zone
# belongs to something else ("left chest wall", "right heart border", "right PICC line")
_OPACITY = re.compile(r"\b(?:opacit(?:y|ies)|opacification|consolidat\w*|air[- ]?space "
                      r"(?:disease|opacit\w*|process|filling)|infiltrat\w*|pneumonias?|"
                      r"atelecta\w*|effusions?)\b")
_EFFUSION = re.compile(r"effusion")
_OTHER = re.compile(r"\b(?:pneumothora\w*|nodul\w*|mass(?:es)?|fractur\w*|o?edema|"
                    r"emphysema\w*|hernia\w*|granulom\w*|scar(?:ring)?|fibros\w*|"
                    r"pacemaker|pacer|icd|catheter|picc|line|tubes?|port|leads?|wires?|clips?|"
                    r"stents?|drains?|sternotomy|valve|hardware|device|arthroplast\w*|prosthes\w*|"
                    r"surgical|postoperative|post-operative)\b")
_HEART_ANY = re.compile(r"heart size|cardiac size|cardiac silhouette|cardiomediastinal "
                        r"silhouette|cardiomegal\w*|\bheart\b")
_CLEAR = re.compile(r"\b(?:lungs|lung fields|lung bases)\b[^,]*?\bclear\b|\bclear (?:lungs|lung "
                    r"fields)\b|\bno acute (?:cardiopulmonary|pulmonary|lung) (?:abnormalit\w*|"
                    r"process|disease|findings?)\b|\bnormal chest\b")
_SIDE = re.compile(r"\b(left|right|bilateral(?:ly)?|both lungs|both sides|both bases|bibasilar|"
                   r"bibasal|bi-?apical)\b")
_NOT_LUNG = re.compile(r"\b(?:left|right)(?:[- ]sided)?[- ](?:(?:heart|cardiac) border|heart|"
                       r"atri\w*|ventric\w*|(?:hemi)?diaphragm\w*|chest wall|subclavian|"
                       r"(?:internal )?jugular|ij|arm|shoulder|breast|axill\w*|clavic\w*|"
                       r"humer\w*|ribs?|\w+ ribs?|mediastin\w*|paratracheal|(?:\w+[- ]){0,2}"
                       r"(?:line|tube|catheter|port|pacemaker|pacer|leads?|wires?|icd|drain|picc|"
                       r"stent|clips?|valve|device|generator|mastectomy))\b")
_FRAGMENT = re.compile(r"(?:(?:in|at|of|involving|within|at the level of) )?(?:the )?"
                       r"(?:left|right|bilateral)(?:[- ](?:lung|lungs|lower|upper|middle|mid|"
                       r"base|bases|apex|lobe|zone|hemithorax|basilar|basal|perihilar|side|"
                       r"field))*")
_ZONE = re.compile(r"\b(upper|middle|mid|lower)[- ](?:zones?|lobes?|lungs?|lung zones?|fields?)\b|"
                   r"\b(lingula\w*)|\b(bases?|basal|basilar|bibasilar|bibasal|ap(?:ex|ices|ical))\b")
_HEART_BIG = re.compile(r"cardiomegaly|heart (?:is )?enlarged|enlarged (?:cardiac|heart)|cardiac "
                        r"silhouette is enlarged|heart size (?:is )?enlarged|enlargement of the "
                        r"cardiac silhouette")
_HEART_NORMAL = re.compile(r"heart (?:size )?(?:is )?(?:within )?normal|normal heart size|"
                           r"heart normal in size|normal cardiac|normal[- ]sized heart|cardio"
                           r"mediastinal silhouette (?:is )?(?:within normal limits|normal|"
                           r"unremarkable)|heart size (?:is )?(?:within normal limits|normal)|"
                           r"heart is not enlarged|heart size is not enlarged")
_SKIP_SECTIONS = ("INDICATION", "HISTORY", "CLINICAL HISTORY", "CLINICAL INFORMATION",
                  "COMPARISON", "TECHNIQUE", "EXAMINATION", "EXAM", "REASON FOR EXAM", "PROMPT",
                  "REASON", "CLINICAL INDICATION")


def read_report(family: str, text: str) -> tuple[dict[str, Any], list[str]]:
    """``(attributes, unread)``: what ``text`` states, and what it says that could not be read
    reliably into an attribute (hedged or unplaced findings, devices, other findings). Only the
    chest radiograph reader tells what it left unread; for the other families any free text
    counts as not fully read."""
    if family == "cxr":
        return _read_cxr(str(text or ""))
    attrs = parse_report(family, text)
    return attrs, ([str(text)] if str(text or "").strip() else [])


def _cxr_text(text: str) -> str:
    rep = parse_sections(text)
    findings = _section(rep, "FINDINGS")
    if findings is not None:
        return findings
    return " \n".join(s for t, s in rep.sections if t.upper() not in _SKIP_SECTIONS)


def _cxr(text: str) -> dict[str, Any]:
    return _read_cxr(text)[0]


def _read_cxr(text: str) -> tuple[dict[str, Any], list[str]]:
    from medsynth.clinical_reports.scope import mentions, sentences, status_of

    body = _cxr_text(text)
    low = body.lower()
    out: dict[str, Any] = {}
    unread: list[str] = []
    found = mentions(body, _OPACITY, _FRAGMENT)
    positive = [m for m in found if m.status == "positive"]
    unread += [m.sentence for m in found if m.status == "uncertain"]
    sides, zones, extents = set(), set(), set()
    for m in positive:
        clause = _NOT_LUNG.sub(" ", m.clause)
        got = {"left" if s.startswith("left") else "right" if s.startswith("right")
               else "bilateral" for s in _SIDE.findall(clause)}
        if not got:
            unread.append(m.sentence)
            continue
        sides |= got
        for z in _ZONE.finditer(clause):
            w = z.group(1) or z.group(2) or z.group(3)
            zones.add("middle" if w in ("mid", "middle") or w.startswith("lingula") else
                      "upper" if w.startswith("ap") or w == "upper" else "lower")
        extents |= {round(float(x) / 100, 2) for x in re.findall(
            r"(\d+(?:\.\d+)?)\s*%\s*of the (?:affected )?lung", m.sentence)}
    if sides:
        out["side"] = "bilateral" if "bilateral" in sides or {"left", "right"} <= sides \
            else sides.pop()
        if len(zones) == 1:
            out["zone"] = zones.pop()
        elif zones:
            unread.append("more than one zone")
        if len(extents) == 1:
            out["opacity_extent"] = extents.pop()
    elif not positive and not any(m.status == "uncertain" for m in found):
        # clear lungs: stated, or a lung opacity negated (a negated effusion alone is not)
        clear = any(m.status == "negated" and not _EFFUSION.search(m.term) for m in found)
        for s in sentences(body):
            for c in _CLEAR.finditer(s):
                if not re.search(r"\b(?:left|right)\b", s) and \
                        status_of(s, (0, len(s)), c.start(), c.end()) != "uncertain":
                    clear = True
        if clear:
            out["side"] = "none"
    unread += [m.sentence for m in mentions(body, _OTHER) if m.status != "negated"]
    m = re.search(r"cardiothoracic ratio(?: is| of|:)?\s*(0?\.\d+)", low)
    if m:
        out["ctr"] = round(float(m.group(1)), 2)
    big = mentions(body, _HEART_BIG)
    normal = [m for m in mentions(body, _HEART_NORMAL)]
    says = {"enlarged" for m in big if m.status == "positive"} | \
        {"normal" for m in big if m.status == "negated"} | \
        {"normal" for m in normal if m.status == "positive"}
    if len(says) == 1:
        out["heart_size"] = says.pop()
    elif says or any(m.status == "uncertain" for m in mentions(body, _HEART_ANY)):
        unread.append("heart size")
    return out, list(dict.fromkeys(unread))


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
    # a side only from the clause of an asserted lesion ("left seminal vesicle" is no side)
    from medsynth.clinical_reports.scope import mentions

    for les in mentions(findings, re.compile(r"\b(?:lesion|focus|tumou?r|abnormality)\b")):
        m = re.search(r"\b(left|right|bilateral)\b", les.clause)
        if les.status == "positive" and m:
            out["side"] = m.group(1)
            break
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
