"""The ``template`` writer: deterministic reports from the class and the conditioning attributes.

Offline and instant. Each sentence has a few phrasings; which one an image gets is drawn from
its own seed, so a set reads varied while every report can be rebuilt alone. A sentence is
written only for what the conditioning states (the class, and the attributes that survived
:func:`medsynth.clinical_reports.base.normalize`): an attribute the conditioning left open is "not
assessed" or left out, never invented. :mod:`medsynth.clinical_reports.parse` reads the attributes back
from these reports exactly (tested), which is how evaluate checks reports against images.

Styles (:data:`medsynth.clinical_reports.base.FAMILIES`):

* ``cxr``: FINDINGS (lungs, heart) and IMPRESSION;
* ``derm``: a structured description, LESION SIZE, ASYMMETRY, BORDER, COLOURS, STRUCTURES,
  IMPRESSION;
* ``prostate``: TECHNIQUE, FINDINGS (zone, side, level, size, signal, margin, extraprostatic
  extension), ASSESSMENT (a PI-RADS-like category) and IMPRESSION;
* ``generic``: FINDINGS (the description) and IMPRESSION (the class).

A free-text prompt that states more than could be read into attributes reliably (a device, a
hedged or unplaced finding) is carried verbatim in a last section, ``PROMPT``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from medsynth.clinical_reports.base import (
    Report,
    ReportContext,
    ReportResult,
    class_phrase,
    flat_text,
    parse_sections,
)

VERSION = "1"
_COLOR_WORDS = {"light_brown": "light brown", "dark_brown": "dark brown", "black": "black",
                "blue_grey": "blue-grey", "red": "red", "white": "white"}
_STRUCTURE_WORDS = {"pigment_network": "pigment network", "dots_globules": "dots and globules",
                    "streaks": "streaks", "blue_white_veil": "blue-white veil"}
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class TemplateWriter:
    """Reports from the class and the attributes; phrasing drawn from the image's seed."""

    name = "template"

    def write(self, contexts: Sequence[ReportContext]) -> list[ReportResult]:
        return [ReportResult(template_report(c), "template") for c in contexts]

    def info(self) -> dict[str, Any]:
        return {"writer": "template", "version": VERSION}

    def close(self) -> None:
        pass


def template_report(ctx: ReportContext) -> Report:
    """The template report of one image (pure function of the context)."""
    rng = random.Random(f"medsynth-report:{ctx.seed}:{ctx.sample_id}")
    build = {"cxr": _cxr, "derm": _derm, "prostate": _prostate}.get(ctx.family, _generic)
    rep = build(ctx, rng)
    if ctx.carry_prompt and build is not _generic:
        # the prompt said more than its attributes: its own words, not an invented reading
        rep.sections.append(("PROMPT", flat_text(ctx.description)))
    return rep


# ------------------------------------------------------------------------------ chest radiograph
def _cxr_kind(cls: str) -> str:
    c = cls.lower()
    if "effusion" in c:
        return "effusion"
    if "pneumon" in c or "consolidat" in c:
        return "pneumonia"
    if "cardiomegal" in c:
        return "cardiomegaly"
    if c in ("normal", "no_finding", "no finding", "healthy"):
        return "normal"
    return "other"


def _cxr(ctx: ReportContext, rng: random.Random) -> Report:
    a, kind = ctx.attributes, _cxr_kind(ctx.cls)
    side, zone, extent = a.get("side"), a.get("zone"), a.get("opacity_extent")
    where = {"left": "the left lung", "right": "the right lung", "bilateral": "both lungs"}
    findings: list[str] = []
    # clear lungs from the class alone, unless a prompt said more about them than was read
    by_prompt = side is None and ctx.carry_prompt
    if side == "none" or (side is None and kind in ("normal", "cardiomegaly") and not by_prompt):
        findings.append(rng.choice(["The lungs are clear.", "No focal lung opacity.",
                                    "Clear lung fields without focal opacity."]))
    elif side in where:
        loc = f"the {zone} zone of {where[side]}" if zone else where[side]
        ext_txt = (rng.choice([f", involving about {extent:.0%} of the lung field",
                               f" ({extent:.0%} of the lung)"]) if extent is not None else "")
        if kind == "effusion":
            who = "Bilateral pleural effusions" if side == "bilateral" else \
                f"A {side} pleural effusion"
            findings.append(f"{who} in {loc}{ext_txt}, blunting the costophrenic angle.")
        else:
            noun = rng.choice(["airspace opacity", "patchy consolidation"]) \
                if kind == "pneumonia" else "opacity"
            findings.append(rng.choice([
                f"There is {'an' if noun[0] in 'ao' else 'a'} {noun} in {loc}{ext_txt}.",
                f"{_cap(noun)} in {loc}{ext_txt}."]))
    elif by_prompt and kind in ("normal", "cardiomegaly"):
        findings.append("The lungs as described in the prompt.")
    else:
        findings.append({"pneumonia": "An airspace opacity is present; its side and zone are "
                                      "not specified.",
                         "effusion": "A pleural effusion is present; its side is not "
                                     "specified."}.get(kind, f"Findings of "
                                                             f"{class_phrase(ctx.cls)}."))
    ctr, heart = a.get("ctr"), a.get("heart_size")
    word = {"normal": "normal in size", "enlarged": "enlarged"}
    if ctr is not None:
        findings.append(rng.choice([
            f"The cardiothoracic ratio is {ctr:.2f}; the heart is {word[heart]}.",
            f"Heart {word[heart]} (cardiothoracic ratio {ctr:.2f})."]))
    elif heart is not None or kind == "cardiomegaly":
        findings.append("The cardiac silhouette is enlarged." if (heart or "enlarged") ==
                        "enlarged" else "The heart size is normal.")

    # IMPRESSION: what the findings state; the class is named where they show it, and noted
    # where the attributes (more specific than the class) do not
    sided = {"left": "left", "right": "right", "bilateral": "bilateral"}.get(str(side), "")
    zone_adj = f"{zone}-zone " if zone else ""
    parts, shown = [], False
    if sided and kind == "effusion":
        parts.append(f"{_cap(sided)} pleural effusion")
        shown = True
    elif sided and kind == "pneumonia":
        lead = _cap(f"{sided} {zone_adj}airspace opacity")
        parts.append(rng.choice([f"{lead}, consistent with pneumonia",
                                 f"{lead}; findings compatible with pneumonia"]))
        shown = True
    elif sided:
        parts.append(_cap(f"{sided} {zone_adj}lung opacity"))
    elif side is None and kind in ("pneumonia", "effusion"):
        parts.append("Airspace opacity, consistent with pneumonia" if kind == "pneumonia"
                     else "Pleural effusion")
        shown = True
    if heart == "enlarged" or (heart is None and kind == "cardiomegaly"):
        parts.append("Cardiomegaly" + (f" (cardiothoracic ratio {ctr:.2f})" if ctr else ""))
        shown = shown or kind == "cardiomegaly"
    if not parts and kind == "other":
        parts.append(f"Findings consistent with {class_phrase(ctx.cls)}")
        shown = True
    elif not parts and by_prompt:
        parts.append("As described in the prompt")
    elif not parts:
        parts.append(rng.choice(["No acute cardiopulmonary abnormality",
                                 "Normal chest radiograph"]))
        shown = kind == "normal"
    impression = ". ".join(parts) + "."
    if kind == "other" and not shown:
        impression += f" Findings consistent with {class_phrase(ctx.cls)}."
    elif not shown and not (kind == "normal" and not sided):
        impression += f" (Image generated for class {class_phrase(ctx.cls)}.)"
    return Report([("FINDINGS", " ".join(findings)), ("IMPRESSION", impression)])


# ----------------------------------------------------------------------------------- dermoscopy
def _derm(ctx: ReportContext, rng: random.Random) -> Report:
    a = ctx.attributes
    label = class_phrase(ctx.cls)
    if a.get("lesion") == "none":
        return Report([("FINDINGS", "No whole lesion in view."),
                       ("IMPRESSION", "Not assessable: no whole lesion in the image.")])
    na = "Not assessed."
    d = a.get("diameter_mm")
    size = rng.choice([f"{d:.1f} mm largest diameter.", f"Largest diameter {d:.1f} mm."]) \
        if d is not None else na
    asym = {0: rng.choice(["Symmetric about both axes.", "Symmetric in shape and structure."]),
            1: "Asymmetric about one axis.",
            2: rng.choice(["Asymmetric about both axes.", "Asymmetric about two axes."])
            }.get(a.get("asymmetry", -1), na)
    border = {"regular": rng.choice(["Regular, sharply demarcated border.", "Regular border."]),
              "irregular": rng.choice(["Irregular border.", "Irregular, notched border."])
              }.get(a.get("border", ""), na)
    colors = a.get("colors")
    if colors is None:
        col = na
    elif not colors:
        col = "No distinct colour."
    else:
        n = len(colors)
        col = (f"{_cap(_NUMBER_WORDS.get(n, str(n)))} colour{'s' if n > 1 else ''}: "
               f"{_join([_COLOR_WORDS[c] for c in colors])}.")
    structs = a.get("structures")
    if structs is None:
        st = na
    elif not structs:
        st = rng.choice(["No specific dermoscopic structure.", "No specific structure seen."])
    else:
        st = _cap(_join([_STRUCTURE_WORDS[s] for s in structs])) + "."
    impression = rng.choice([f"Dermoscopic features consistent with {label}.",
                             f"Dermoscopic appearance of {label}."])
    return Report([("LESION SIZE", size), ("ASYMMETRY", asym), ("BORDER", border),
                   ("COLOURS", col), ("STRUCTURES", st), ("IMPRESSION", impression)])


# --------------------------------------------------------------------------------- prostate MRI
def pirads_like(cls: str, a: dict[str, Any]) -> int | None:
    """The PI-RADS-like category the conditioning implies: the attribute, else the class
    (``pirads_3``, ``pirads_4_5`` split by size >= 15 mm or extraprostatic extension), else 1
    for no lesion; None when nothing says."""
    if "pirads" in a:
        return int(a["pirads"])
    c = cls.lower()
    if "4_5" in c or "4-5" in c:
        size = a.get("size_mm")
        if size is None and "extraprostatic_extension" not in a:
            return None
        return 5 if (size or 0) >= 15 or a.get("extraprostatic_extension") == "yes" else 4
    for g in (1, 2, 3, 4, 5):
        if c.endswith(f"pirads_{g}") or c == f"pirads{g}":
            return g
    if a.get("zone") == "none" or c in ("no_lesion", "normal"):
        return 1
    return None


def _signal_word(h: float | None) -> str:
    if h is None:
        return "T2-hypointense"
    word = "mildly" if h < 0.3 else "moderately" if h < 0.45 else "markedly"
    return f"{word} T2-hypointense"


def _prostate(ctx: ReportContext, rng: random.Random) -> Report:
    a = ctx.attributes
    technique = rng.choice(["Synthetic T2-weighted MRI of the prostate.",
                            "T2-weighted prostate MRI (synthetic)."])
    findings = []
    if "gland_volume_ml" in a:
        findings.append(f"Prostate volume {a['gland_volume_ml']:.0f} ml.")
    zone = a.get("zone")
    grade = pirads_like(ctx.cls, a)
    if zone == "none" or (zone is None and grade in (1, 2)):
        findings.append("A thin band-like area of low T2 signal in the peripheral zone, without "
                        "a focal lesion." if grade == 2 else
                        rng.choice(["No focal lesion in the peripheral or transition zone.",
                                    "No focal lesion is seen."]))
    elif zone is not None:
        size = f"{a['size_mm']:.0f} mm " if "size_mm" in a else ""
        margin = {"circumscribed": "circumscribed", "ill_defined": "ill-defined"}.get(
            a.get("margin", ""), "")
        signal = _signal_word(a.get("t2_hypointensity")) if a.get("signal", "hypointense") == \
            "hypointense" else a["signal"]
        desc = ", ".join(x for x in (margin, signal) if x)
        side = f"{a['side']} " if "side" in a else ""
        level = {"base": " at the base", "mid": " at the mid-gland", "apex": " at the apex"}.get(
            a.get("level", ""), "")
        epe = {"yes": ", with extraprostatic extension",
               "no": ", without extraprostatic extension"}.get(
            a.get("extraprostatic_extension", ""), "")
        zone_txt = zone.replace("_", " ")
        findings.append(f"A {size}{desc} lesion in the {side}{zone_txt} zone{level}{epe}.")
    else:
        findings.append(f"Findings of {class_phrase(ctx.cls)}; the lesion's zone is not "
                        "specified.")
    assessment = f"PI-RADS-like category {grade}." if grade else \
        "PI-RADS-like category not assigned."
    impression = {1: "No clinically significant lesion.",
                  2: "No clinically significant lesion.",
                  3: "Equivocal lesion; clinically significant cancer is uncertain.",
                  4: "Lesion likely to be clinically significant.",
                  5: "Lesion highly likely to be clinically significant."}.get(
        grade or 0, f"Findings consistent with {class_phrase(ctx.cls)}.")
    return Report([("TECHNIQUE", technique), ("FINDINGS", " ".join(findings)),
                   ("ASSESSMENT", assessment), ("IMPRESSION", impression)])


# -------------------------------------------------------------------------------------- generic
def _generic(ctx: ReportContext, rng: random.Random) -> Report:
    # a description with its own headings keeps them (never "FINDINGS:\nFINDINGS:")
    own = [("FINDINGS" if t == "TEXT" else t, " ".join(b.split()))
           for t, b in parse_sections(str(ctx.description or "")).sections if b.strip()]
    if not own:
        own = [("FINDINGS", f"Synthetic image of class {class_phrase(ctx.cls)}.")]
    if not any(t == "IMPRESSION" for t, _ in own):
        own.append(("IMPRESSION", f"{_cap(class_phrase(ctx.cls))}."))
    return Report(own)
