"""The ``llm`` writer: a model writes the report from the class, the attributes and (optionally)
the image, through the shared MLLM engine (:mod:`medsynth.mllm`).

Any backend of the engine works: an OpenAI-compatible server (vLLM, Ollama, ``transformers
serve``, hosted APIs) or a local transformers model. Each answer is checked:

* every section of the family's style is present and not empty;
* the findings it states (read back with :mod:`medsynth.clinical_reports.parse`) agree with the
  conditioning: no side, zone, size, colour, grade ... the conditioning did not give, none that
  contradicts it, no named finding the class and attributes do not imply (negations such as
  "no pleural effusion" are allowed).

An invalid answer is re-asked with its problems at most ``max_reasks`` times; an answer still
invalid, a failed request or a server that went away gives the template report instead, with a
warning recorded (``ReportResult.writer == "template-fallback"``) and every raw answer kept by
the caller. Nothing is lost and no image waits for a report forever.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medsynth.clinical_reports.base import Report, ReportContext, ReportResult, parse_sections
from medsynth.clinical_reports.parse import parse_report
from medsynth.clinical_reports.scope import positive_text
from medsynth.clinical_reports.template import template_report

PROMPT_FILE = Path(__file__).parent / "prompts" / "report.yaml"
SECTIONS = {
    "cxr": ("FINDINGS", "IMPRESSION"),
    "derm": ("LESION SIZE", "ASYMMETRY", "BORDER", "COLOURS", "STRUCTURES", "IMPRESSION"),
    "prostate": ("FINDINGS", "ASSESSMENT", "IMPRESSION"),
    "generic": ("FINDINGS", "IMPRESSION"),
}
STYLE = {
    "cxr": "A chest radiograph report: FINDINGS describes the lungs and the heart; IMPRESSION "
           "is one sentence.",
    "derm": "A structured dermoscopy description: one short sentence per section; write 'Not "
            "assessed.' where no finding is given.",
    "prostate": "A prostate MRI report: FINDINGS gives zone, side, level, size, signal, margin "
                "and extraprostatic extension as given; ASSESSMENT gives the PI-RADS-like "
                "category as given ('not assigned' when none is given).",
    "generic": "A short imaging report.",
}
MODALITY_NAMES = {"cxr": "chest radiograph", "derm": "dermoscopy", "prostate": "prostate MRI"}
_NAMES = {"diameter_mm": "largest diameter (mm)", "asymmetry": "axes of asymmetry (0-2)",
          "opacity_extent": "share of the lung that is opaque", "ctr": "cardiothoracic ratio",
          "size_mm": "lesion size (mm)", "pirads": "PI-RADS-like category",
          "t2_hypointensity": "T2 hypointensity (0-1)", "gland_volume_ml": "prostate volume (ml)"}
# Named findings a report must not assert unless the class or the attributes imply them.
_FINDING_WORDS = {
    "cxr": {"effusion": r"effusion", "pneumothorax": r"pneumothora",
            "pneumonia": r"consolidat|pneumonia|airspace opacit",
            "cardiomegaly": r"cardiomegal|enlarged (?:heart|cardiac)|heart is enlarged",
            "nodule": r"nodule|mass\b", "fracture": r"fracture"},
    "derm": {},
    "prostate": {"extraprostatic": r"extraprostatic extension", "lesion": r"\blesion"},
}
_TOLERANCE = {"diameter_mm": 1.0, "opacity_extent": 0.05, "ctr": 0.03, "size_mm": 2.0,
              "gland_volume_ml": 3.0}


def implied(family: str, cls: str) -> dict[str, Any]:
    """Attributes the class alone states (a 'normal' radiograph has clear lungs)."""
    c = cls.lower()
    if family == "cxr" and c in ("normal", "no_finding", "healthy"):
        return {"side": "none"}
    if family == "prostate" and c in ("no_lesion", "normal"):
        return {"zone": "none"}
    return {}


def _allowed_findings(family: str, ctx: ReportContext) -> set[str]:
    c, a = ctx.cls.lower(), ctx.attributes
    out = {k for k in _FINDING_WORDS.get(family, {}) if k in c}
    if family == "cxr":
        if "effusion" in c:
            out.add("effusion")
        if "pneumon" in c or (a.get("side") not in (None, "none")):
            out.add("pneumonia")
        if "cardiomegal" in c or a.get("heart_size") == "enlarged":
            out.add("cardiomegaly")
    if family == "prostate":
        if a.get("extraprostatic_extension") == "yes":
            out.add("extraprostatic")
        if a.get("zone") not in ("none",) and not c.startswith("no_"):
            out.add("lesion")
    return out


def consistency_problems(family: str, ctx: ReportContext, text: str) -> list[str]:
    """Why ``text`` is not a faithful report of ``ctx`` (empty = it is)."""
    given = {**implied(family, ctx.cls), **ctx.attributes}
    stated = parse_report(family, text)
    problems = []
    for k, v in stated.items():
        if k not in given:
            if k == "heart_size" and v == "normal" and "cardiomegal" not in ctx.cls.lower() \
                    and given.get("heart_size") is None and family == "cxr" and "ctr" not in given:
                continue  # "normal heart size" on an image nobody asked about the heart: harmless
            problems.append(f"the report states {k.replace('_', ' ')} = {v!r}, which was not "
                            "given: leave it out")
            continue
        g = given[k]
        if isinstance(v, (int, float)) and isinstance(g, (int, float)) and k in _TOLERANCE:
            if abs(float(v) - float(g)) > _TOLERANCE[k]:
                problems.append(f"the report states {k.replace('_', ' ')} = {v}, but it is {g}")
        elif isinstance(v, list) and isinstance(g, list):
            if set(v) - set(g):
                problems.append(f"the report states {k} {sorted(set(v) - set(g))}, which were "
                                f"not given (given: {g or 'none'})")
        elif v != g:
            problems.append(f"the report states {k.replace('_', ' ')} = {v!r}, but it is {g!r}")
    positive = positive_text(text)  # negated and hedged stretches do not assert a finding
    allowed = _allowed_findings(family, ctx)
    for name, pat in _FINDING_WORDS.get(family, {}).items():
        if name not in allowed and re.search(pat, positive):
            problems.append(f"the report asserts {name}, which was not given")
    return problems


def _findings_lines(ctx: ReportContext) -> str:
    given = {**implied(ctx.family, ctx.cls), **ctx.attributes}
    if not given:
        return "- none beyond the class" + (f" (description: {ctx.description})"
                                            if ctx.description else "")
    lines = []
    for k, v in given.items():
        val = ", ".join(str(x).replace("_", " ") for x in v) or "none" if isinstance(v, list) \
            else str(v).replace("_", " ")
        lines.append(f"- {_NAMES.get(k, k.replace('_', ' '))}: {val}")
    return "\n".join(lines)


class ReportCheck:
    """The engine check of one answer: sections present, then consistent with the context."""

    def __init__(self, family_sections: dict[str, tuple[str, ...]] = SECTIONS) -> None:
        self.sections = family_sections

    def __call__(self, raw: str, ctx: ReportContext) -> Any:
        from medsynth.mllm.validate import Checked

        text = _strip_wrappers(raw)
        if not text.strip():
            return Checked(problems=["the answer is empty"])
        rep = parse_sections(text)
        want = self.sections.get(ctx.family, SECTIONS["generic"])
        problems = []
        for title in want:
            body = rep.section(title)
            if body is None:
                problems.append(f"the section '{title}:' is missing")
            elif not body.strip():
                problems.append(f"the section '{title}:' is empty")
        if not problems:
            problems = consistency_problems(ctx.family, ctx, text)
        if problems:
            return Checked(problems=problems)
        return Checked(value=Report([(t, " ".join(str(rep.section(t)).split())) for t in want]))


def _strip_wrappers(raw: str) -> str:
    """The report inside an answer: code fences and markdown emphasis removed."""
    t = re.sub(r"```[a-z]*", "", str(raw or ""))
    return re.sub(r"[*#]+", "", t).strip()


class LLMWriter:
    """Reports written by a model through the MLLM engine, checked, template as the fallback."""

    name = "llm"

    def __init__(self, backend: Any, *, max_reasks: int = 2, with_image: bool = False,
                 prompt_file: str | Path | None = None, max_tokens: int = 400) -> None:
        from medsynth.mllm import Engine
        from medsynth.mllm.templates import load_prompt_template

        self.backend = backend
        self.engine = Engine(backend, max_reasks=max_reasks)
        self.template = load_prompt_template(prompt_file or PROMPT_FILE)
        self.with_image = with_image
        self.max_tokens = max_tokens
        self.check = ReportCheck()
        self.dead: str = ""
        """Set when the backend stopped answering: later batches use the template at once."""

    def _request(self, ctx: ReportContext) -> Any:
        req = self.template.request(
            [ctx.image] if self.with_image and ctx.image is not None else [],
            modality_name=MODALITY_NAMES.get(ctx.family, ctx.modality or "medical"),
            cls=ctx.cls, findings=_findings_lines(ctx),
            sections="\n".join(f"{t}:" for t in SECTIONS.get(ctx.family, SECTIONS["generic"])),
            style=STYLE.get(ctx.family, STYLE["generic"]))
        req.reask_hint = "Answer again with the report only, in the required sections."
        req.max_tokens = self.max_tokens
        return req

    def write(self, contexts: Sequence[ReportContext]) -> list[ReportResult]:
        from medsynth.mllm.backend import BackendUnavailable

        results: dict[str, ReportResult] = {}
        if not self.dead:
            try:
                for o in self.engine.run(list(contexts), self._request, self.check):
                    ctx = o.item
                    if o.status == "ok":
                        results[ctx.sample_id] = ReportResult(o.value, "llm", raw=o.answers)
                    else:
                        why = "; ".join(o.problems) if o.status == "failed" else o.error
                        results[ctx.sample_id] = ReportResult(
                            template_report(ctx), "template-fallback", raw=o.answers,
                            warning=f"llm report {o.status} ({why}); template report used")
            except BackendUnavailable as e:
                self.dead = str(e)
        for ctx in contexts:
            if ctx.sample_id not in results:
                results[ctx.sample_id] = ReportResult(
                    template_report(ctx), "template-fallback",
                    warning=f"llm unavailable ({self.dead}); template report used")
        return [results[c.sample_id] for c in contexts]

    def info(self) -> dict[str, Any]:
        return {"writer": "llm", "backend": self.backend.name, "model": self.backend.model,
                "prompt_version": self.template.full_version, "with_image": self.with_image,
                "max_reasks": self.engine.max_reasks, **{"backend_info": self.backend.info()}}

    def close(self) -> None:
        self.backend.close()
