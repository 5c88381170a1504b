"""The judging core: images + criteria -> one verdict per criterion, through the MLLM engine.

Shared by ``medsynth judge`` (judged folders) and ``medsynth refine`` (on-policy rounds); stage
packages do not import each other, so both use this module. Four judges, one record format::

    {"sample_id", "class", "image_valid", "score", "verdicts": [{"id", "verdict",
     "confidence", "rationale"}], "backend", "model", "criteria_sha256", "status", "raw"}

* ``real-features`` (offline, for real images): nearness to the real training split in
  feature space and a classifier fitted on it (:mod:`medsynth.judging.realjudge`).
* ``measure`` (offline default): the pixel measurers (:mod:`medsynth.pixel_attributes`) through the
  engine's measure backend; each criterion with a ``measure`` rule is checked against the
  measured attribute, the others are ``unsure`` (never guessed) and leave the score's
  denominator.
* ``openai``: any OpenAI-compatible server; one request per image with the class's JSON schema
  (every criterion id required), temperature 0, the image as a data URL; answers validated and
  re-asked by the engine.
* ``transformers``: a local vision-language model; one yes/no question per criterion, P(yes)
  and P(no) read from the next-token logits (:meth:`TransformersBackend.yes_no`); ``unsure``
  when the yes/no probability mass or the margin is low.

Typical use (refine's rounds)::

    crit = load_criteria("derm")
    with make_judge(crit, JudgeSettings(backend="measure")) as judge:
        records = judge_arrays(judge, arrays, classes, mm_per_px=20 / 64)

``run_judge`` judges a whole synthetic set into a judged folder (resumable, flushed per image);
``open_judged`` reads one back; ``select`` is the filtering rule of ``judge filter``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from medsynth.choices import JudgeBackend, StructuredOutput, values
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.judging.criteria import (
    VERDICTS,
    ClassCriteria,
    CriteriaFile,
    criteria_schema,
    rule_verdict,
    weighted_score,
)
from medsynth.recipe import Recipe

BACKENDS = values(JudgeBackend)
VERDICTS_NAME = "verdicts.jsonl"
SCORES_NAME = "scores.csv"
CRITERIA_NAME = "criteria.yaml"
STATUS = ("ok", "failed")
DEFAULT_SYSTEM = ("You are a careful expert reader checking synthetic medical images against "
                  "a checklist. Judge only what is visible in the image.")


# ---------------------------------------------------------------------------------------------
# records


@dataclasses.dataclass
class Verdict:
    """The judge's answer on one criterion."""

    id: str
    verdict: str
    """``met`` | ``not_met`` | ``unsure``."""
    confidence: float
    """0..1 (measure: distance from the rule's bound; transformers: max(P(yes), P(no)))."""
    rationale: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "verdict": self.verdict, "confidence": float(self.confidence),
                "rationale": self.rationale}


@dataclasses.dataclass
class JudgedRecord:
    """One image's verdicts (one line of verdicts.jsonl)."""

    sample_id: str
    cls: str
    image_valid: bool
    """The image shows what the criteria file's ``validity`` says at all (an invalid image
    scores 0, MAGIC's all-zero list)."""
    score: float
    """Weighted share of the checkable criteria met, in [0, 1]; 0 when invalid or failed."""
    verdicts: list[Verdict]
    backend: str
    model: str
    criteria_sha256: str
    status: str = "ok"
    """``ok``, or ``failed``: no valid answer after the re-asks (verdicts all unsure, score 0,
    raw answers kept); filter and refine skip failed records."""
    raw: Any = None
    """What the judge saw or said: raw model answers, P(yes) per criterion, or the measured
    attributes."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def verdict_map(self) -> dict[str, str]:
        return {v.id: v.verdict for v in self.verdicts}

    def counts(self) -> dict[str, int]:
        vals = [v.verdict for v in self.verdicts]
        return {k: vals.count(k) for k in VERDICTS}

    def to_dict(self) -> dict[str, Any]:
        d = {"sample_id": self.sample_id, "class": self.cls, "image_valid": bool(self.image_valid),
             "score": float(self.score), "verdicts": [v.to_dict() for v in self.verdicts],
             "backend": self.backend, "model": self.model,
             "criteria_sha256": self.criteria_sha256, "status": self.status}
        if self.raw is not None:
            d["raw"] = self.raw
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JudgedRecord:
        return cls(sample_id=str(d["sample_id"]), cls=str(d["class"]),
                   image_valid=bool(d.get("image_valid", False)), score=float(d.get("score", 0)),
                   verdicts=[Verdict(str(v["id"]), str(v["verdict"]),
                                     float(v.get("confidence", 0)), str(v.get("rationale", "")))
                             for v in d.get("verdicts", [])],
                   backend=str(d.get("backend", "")), model=str(d.get("model", "")),
                   criteria_sha256=str(d.get("criteria_sha256", "")),
                   status=str(d.get("status", "ok")), raw=d.get("raw"))


def make_record(crit: CriteriaFile, cls: str, sample_id: str, answer: dict[str, Any], *,
                backend: str, model: str, checkable: Iterable[str] | None = None,
                raw: Any = None) -> JudgedRecord:
    """A record from a validated answer ``{"image_valid", "criteria": {id: {verdict,
    confidence, rationale}}}`` (the class's schema); the score is computed here, never taken
    from the judge."""
    cc = crit.for_class(cls)
    valid = bool(answer.get("image_valid", False))
    per = answer.get("criteria", {})
    verdicts = []
    for c in cc.criteria:
        v = per.get(c.id, {})
        verdict = str(v.get("verdict", "unsure"))
        if verdict not in VERDICTS:
            verdict = "unsure"
        conf = float(v.get("confidence", 0.0))
        verdicts.append(Verdict(c.id, verdict, round(min(max(conf, 0.0), 1.0), 4),
                                " ".join(str(v.get("rationale", "")).split())[:500]))
    score = weighted_score(cc, {v.id: v.verdict for v in verdicts}, valid, checkable)
    return JudgedRecord(sample_id=sample_id, cls=cls, image_valid=valid, score=score,
                        verdicts=verdicts, backend=backend, model=model,
                        criteria_sha256=crit.sha256, raw=raw)


def failed_record(crit: CriteriaFile, cls: str, sample_id: str, problems: list[str], *,
                  backend: str, model: str, raw: Any) -> JudgedRecord:
    """The record of an image without a valid answer (kept, so the raw answers are seen)."""
    why = "no valid answer: " + "; ".join(problems)[:300]
    return JudgedRecord(sample_id=sample_id, cls=cls, image_valid=False, score=0.0,
                        verdicts=[Verdict(c.id, "unsure", 0.0, why)
                                  for c in crit.for_class(cls).criteria],
                        backend=backend, model=model, criteria_sha256=crit.sha256,
                        status="failed", raw=raw)


# ---------------------------------------------------------------------------------------------
# what is judged


@dataclasses.dataclass
class JudgeItem:
    """One image to judge: its pixels (or a file to read them from) and its class."""

    sample_id: str
    cls: str
    image: np.ndarray | None = None
    """Channel-first pixels (as :func:`medsynth.imaging.readers.read_image` returns them)."""
    path: Path | None = None
    """Read when ``image`` is None (in the engine's worker thread)."""
    mm_per_px: float | None = None
    """Pixel size (the offline derm judge needs it for diameters); None = the image's own
    spacing, else the criteria file's field of view."""

    def load(self) -> tuple[np.ndarray, float | None]:
        """Pixels and the pixel size (mm) known for them."""
        if self.image is not None:
            return self.image, self.mm_per_px
        if self.path is None:
            raise MedsynthError(f"{self.sample_id}: no image and no path to read it from")
        from medsynth.imaging.readers import read_image

        img = read_image(self.path)
        mm = self.mm_per_px
        if mm is None and img.spacing:
            mm = float(img.spacing[-1])
        return img.array, mm


@dataclasses.dataclass
class JudgeOutcome:
    """One item's result: a record (ok or failed), or an error (nothing recorded: a resumed run
    asks again)."""

    item: JudgeItem
    record: JudgedRecord | None = None
    error: str = ""


class JudgeSettings(Recipe):
    """Which judge, and how it talks to its model."""

    model_config = ConfigDict(strict=False)
    option_names: ClassVar[dict[str, str] | None] = {}

    backend: JudgeBackend = "measure"
    """``measure`` (offline pixel measurements), ``openai`` or ``transformers``."""
    model: str | None = None
    """Model name (openai) or local path / cached name (transformers)."""
    base_url: str | None = None
    """OpenAI-compatible base URL (openai)."""
    concurrency: Annotated[int, Field(ge=1)] = 4
    """Requests in flight (openai), questions per forward pass (transformers), worker
    processes (measure)."""
    timeout: Annotated[float, Field(gt=0)] = 120.0
    """Seconds per HTTP request (openai)."""
    request_retries: Annotated[int, Field(ge=0)] = 4
    """HTTP retries on 429/5xx/timeouts with backoff (openai)."""
    max_reasks: Annotated[int, Field(ge=0)] = 2
    """Re-asks of an invalid answer before the image is recorded as failed (openai)."""
    max_new_tokens: Annotated[int, Field(ge=1)] = 1024
    """Answer length limit (openai)."""
    structured_output: StructuredOutput = "auto"
    """openai: ``auto`` sends the class's JSON schema as response_format (prompted JSON when
    the server refuses it); ``off`` never sends it."""
    min_mass: Annotated[float, Field(ge=0, le=1)] = 0.5
    """transformers: a criterion is ``unsure`` when P(yes) + P(no) of the first answer token is
    below this (the model is not answering yes or no)."""
    min_margin: Annotated[float, Field(ge=0, lt=0.5)] = 0.1
    """transformers: ``unsure`` when |P(yes | yes or no) - 0.5| is below this."""
    real: str | None = None
    """real-features: the dataset whose real ``train`` split the judge is fitted on (None:
    the dataset the synthetic set's model trained on, resolved by ``run_judge``)."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        from medsynth.mllm.backend import model_server

        self.base_url, self.model = model_server(self.backend, self.base_url, self.model,
                                                 what="judge")
        return self


# ---------------------------------------------------------------------------------------------
# the offline judge's measurer


@dataclasses.dataclass(frozen=True)
class CriteriaMeasurer:
    """Answers a judge request from the pixels: measure, then apply each criterion's rule
    (picklable: runs in the measure backend's worker processes)."""

    criteria: CriteriaFile

    def __call__(self, request: Any) -> dict[str, Any]:
        cls = str(request.context["class"])
        cc = self.criteria.for_class(cls)
        image = request.image
        width = image.shape[-1]
        mm = request.context.get("mm_per_px")
        if not mm and self.criteria.field_of_view_mm:
            mm = self.criteria.field_of_view_mm / width
        valid, values, why = measure_values(self.criteria.measurer, image, mm)
        out: dict[str, Any] = {}
        for c in cc.criteria:
            if c.measure is None:
                out[c.id] = {"verdict": "unsure", "confidence": 0.0,
                             "rationale": "not measurable from the pixels"}
            elif not valid:
                out[c.id] = {"verdict": "not_met", "confidence": 1.0, "rationale": why}
            else:
                value = values.get(c.measure.attribute)
                verdict, conf = rule_verdict(c.measure, value)
                shown = why if value is None else f"measured {c.measure.attribute} = " \
                    f"{_show(value)}; wanted {c.measure.describe()}"
                out[c.id] = {"verdict": verdict, "confidence": conf, "rationale": shown}
        return {"image_valid": bool(valid), "criteria": out, "measured": values}


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ";".join(map(str, v)) or "none"
    return str(v)


DERM_SHAPE_ATTRIBUTES = ("diameter_mm", "asymmetry", "border_irregularity", "border")
"""Derm attributes that need the whole outline (unsure when the lesion is cut by the edge)."""


def measure_values(measurer: str, image: np.ndarray, mm_per_px: float | None
                   ) -> tuple[bool, dict[str, Any], str]:
    """(image_valid, measured attributes, why) for the offline judge.

    derm: invalid when no lesion is found (skin only, a hair, the dermoscope's rim); a lesion
    cut by the image edge is valid, but its size and outline are not measurable (None).
    cxr: invalid when no lung fields are found. Unmeasurable attributes are None.
    """
    from medsynth.pixel_attributes import measure_cxr, measure_derm

    if measurer == "derm":
        if image.ndim != 3 or image.shape[0] != 3:
            return False, {}, f"not an RGB image (shape {tuple(image.shape)})"
        m = measure_derm(image, float(mm_per_px or 20.0 / image.shape[-1]), with_view=True)
        view = m.pop("lesion")
        if view == "none":
            return False, m, "no skin lesion found in the image"
        m["colors"] = [c for c in str(m["colors"]).split(";") if c]
        m["structures"] = [s for s in str(m["structures"]).split(";") if s and s != "none"]
        if mm_per_px is None:
            m["diameter_mm"] = None
        if view == "partial":
            for k in DERM_SHAPE_ATTRIBUTES:
                m[k] = None
        return True, m, "the lesion is cut by the image edge: its outline is not all in view"
    if measurer == "cxr":
        if image.ndim != 3 or image.shape[0] != 1:
            return False, {}, f"not a grayscale image (shape {tuple(image.shape)})"
        m = measure_cxr(image)
        if m["thorax_width_px"] <= 0:
            return False, m, "no lung fields found in the image"
        return True, m, ""
    return True, {}, "no measurer"


# ---------------------------------------------------------------------------------------------
# judges


class Judge:
    """Judges items against a criteria file; ``name`` and ``model`` go into every record."""

    name: str = ""
    model: str = ""

    def __init__(self, criteria: CriteriaFile) -> None:
        self.criteria = criteria

    def judge(self, items: Iterable[JudgeItem]) -> Iterator[JudgeOutcome]:
        """Outcomes of the items (completion order)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {}

    @property
    def notices(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EngineJudge(Judge):
    """The measure and openai judges: one request per image through the engine, validated
    against the class's schema."""

    def __init__(self, criteria: CriteriaFile, backend: Any, *, max_reasks: int = 2,
                 structured: bool = True, checkable_only: bool = False) -> None:
        from medsynth.mllm import Engine, JsonAnswer

        super().__init__(criteria)
        self.backend = backend
        self.name, self.model = backend.name, backend.model
        self.engine = Engine(backend, max_reasks=max_reasks)
        self.structured = structured
        self.schemas = {c: criteria_schema(cc) for c, cc in criteria.classes.items()}
        if checkable_only:  # the offline judge's answers carry what it measured
            for schema in self.schemas.values():
                schema["properties"]["measured"] = {"type": "object"}
        self.checks = {c: JsonAnswer(s) for c, s in self.schemas.items()}
        # the offline judge checks only what has a rule; a model judge is asked everything
        self.checkable = ({c: [k.id for k in cc.criteria if k.measure is not None]
                           for c, cc in criteria.classes.items()} if checkable_only else None)

    def request(self, item: JudgeItem) -> Any:
        from medsynth.mllm import Request

        image, mm = item.load()
        cc = self.criteria.for_class(item.cls)
        return Request(user=judge_prompt(self.criteria, cc), system=self.criteria.system
                       or DEFAULT_SYSTEM, images=[image],
                       schema=self.schemas[item.cls] if self.structured else None,
                       schema_name="verdicts", temperature=0.0,
                       context={"class": item.cls, "mm_per_px": mm})

    def judge(self, items: Iterable[JudgeItem]) -> Iterator[JudgeOutcome]:
        def check(raw: str, item: JudgeItem) -> Any:
            return self.checks[item.cls](raw, item)

        for o in self.engine.run(items, self.request, check):
            item = o.item
            if o.status == "error":
                yield JudgeOutcome(item, error=o.error)
                continue
            if o.status == "failed":
                yield JudgeOutcome(item, failed_record(
                    self.criteria, item.cls, item.sample_id, o.problems, backend=self.name,
                    model=self.model, raw=o.raw))
                continue
            value = o.value
            raw: Any = o.raw
            if self.checkable is not None:  # measure: keep the measurements, not the JSON
                import json

                raw = {"measured": json.loads(o.answers[-1]).get("measured", {})}
            yield JudgeOutcome(item, make_record(
                self.criteria, item.cls, item.sample_id, value, backend=self.name,
                model=self.model, raw=raw,
                checkable=None if self.checkable is None else self.checkable[item.cls]))

    def info(self) -> dict[str, Any]:
        return dict(self.backend.info())

    @property
    def notices(self) -> list[str]:
        return list(getattr(self.backend, "notices", []))

    def close(self) -> None:
        self.backend.close()


class MeasureJudge(EngineJudge):
    """The offline judge (pixel measurers)."""

    def __init__(self, criteria: CriteriaFile, processes: int = 1) -> None:
        from medsynth.mllm import measure_backend

        if criteria.measurer == "none":
            raise MedsynthError(f"{criteria.path}: measurer is 'none': the offline judge has "
                                "nothing to measure",
                                hint="use --backend openai or --backend transformers, or set "
                                     "measurer: derm | cxr in the criteria file")
        backend = measure_backend(CriteriaMeasurer(criteria), name="measure",
                                  processes=processes)
        super().__init__(criteria, backend, max_reasks=0, checkable_only=True)


class YesNoJudge(Judge):
    """The transformers judge: a yes/no question per criterion, read from next-token logits."""

    name = "transformers"

    def __init__(self, criteria: CriteriaFile, backend: Any, *, min_mass: float = 0.5,
                 min_margin: float = 0.1) -> None:
        super().__init__(criteria)
        self.backend = backend
        self.model = backend.model
        self.min_mass, self.min_margin = min_mass, min_margin

    def decide(self, p_yes: float, mass: float) -> tuple[str, float]:
        """(verdict, confidence) from P(yes | yes or no) and the yes/no mass."""
        if mass < self.min_mass or abs(p_yes - 0.5) < self.min_margin:
            return "unsure", round(max(p_yes, 1 - p_yes), 4)
        return ("met" if p_yes > 0.5 else "not_met"), round(max(p_yes, 1 - p_yes), 4)

    def judge(self, items: Iterable[JudgeItem]) -> Iterator[JudgeOutcome]:
        system = self.criteria.system or DEFAULT_SYSTEM
        for item in items:
            image, _ = item.load()
            cc = self.criteria.for_class(item.cls)
            questions = [yes_no_question(self.criteria.validity)] + \
                [yes_no_question(c.text) for c in cc.criteria]
            answers = self.backend.yes_no(image, questions, system=system)
            valid_v, _ = self.decide(answers[0].p_yes, answers[0].mass)
            per = {}
            for c, a in zip(cc.criteria, answers[1:], strict=True):
                verdict, conf = self.decide(a.p_yes, a.mass)
                per[c.id] = {"verdict": verdict, "confidence": conf,
                             "rationale": f"P(yes) {a.p_yes:.3f}, yes/no mass {a.mass:.3f}"}
            raw = {"p_yes": [round(a.p_yes, 5) for a in answers],
                   "mass": [round(a.mass, 5) for a in answers]}
            # an image is invalid only when the model says no to the validity statement
            answer = {"image_valid": valid_v != "not_met", "criteria": per}
            yield JudgeOutcome(item, make_record(self.criteria, item.cls, item.sample_id,
                                                 answer, backend=self.name, model=self.model,
                                                 raw=raw))

    def info(self) -> dict[str, Any]:
        return {**self.backend.info(), "min_mass": self.min_mass, "min_margin": self.min_margin}

    def close(self) -> None:
        self.backend.close()


def yes_no_question(statement: str) -> str:
    """A checklist statement as a yes/no question about the image."""
    return f"Look at the image. Is this statement true: \"{statement.strip()}\"?"


def judge_prompt(crit: CriteriaFile, cc: ClassCriteria) -> str:
    """The user text of a model judge's request for one class (prompted JSON: the answer format
    is spelled out, whether or not the server enforces the schema)."""
    lines = [f"This is a synthetic {crit.subject}. It was generated to show the class "
             f"'{cc.name}'" + (f" ({cc.description})" if cc.description else "") + ".",
             "",
             f"First decide image_valid: true if this holds, false if not: {crit.validity}",
             "",
             "Then check each criterion below against what is visible in the image. For each, "
             "answer \"met\", \"not_met\" or \"unsure\" (when the image does not show enough to "
             "decide), a confidence from 0 to 1, and a one-sentence rationale naming what you "
             "see.",
             "",
             "Criteria:"]
    lines += [f"- {c.id}: {c.text}" for c in cc.criteria]
    if crit.instructions:
        lines += ["", crit.instructions]
    example = ", ".join(f'"{c.id}": {{"verdict": "met", "confidence": 0.8, "rationale": "..."}}'
                        for c in cc.criteria[:2])
    more = ", ..." if len(cc.criteria) > 2 else ""
    lines += ["", "Answer with only a JSON object with exactly these keys: "
              f'{{"image_valid": true, "criteria": {{{example}{more}}}}}, with one entry for '
              f"every criterion id ({', '.join(cc.ids)})."]
    return "\n".join(lines)


def make_judge(criteria: CriteriaFile, settings: JudgeSettings, *,
               n_images: int | None = None) -> Judge:
    """The judge ``settings`` names (model libraries are loaded now)."""
    if settings.backend == "real-features":
        from medsynth.judging.realjudge import RealFeatureJudge, RealReference

        if not settings.real:
            raise BadUsageError("the real-features judge needs the real dataset it is fitted "
                                "on (--real DATASET)")
        return RealFeatureJudge(criteria, RealReference.fit(settings.real))
    if settings.backend == "measure":
        processes = min(settings.concurrency, os.cpu_count() or 1,
                        max((n_images or 0) // 32, 1))
        return MeasureJudge(criteria, processes=processes)
    from medsynth.mllm import BackendConfig, make_backend

    cfg = BackendConfig(kind=settings.backend, model=str(settings.model),
                        base_url=settings.base_url, concurrency=settings.concurrency,
                        timeout=settings.timeout, retries=settings.request_retries,
                        max_tokens=settings.max_new_tokens, temperature=0.0,
                        structured_output=settings.structured_output)
    backend = make_backend(cfg)
    if settings.backend == "openai":
        return EngineJudge(criteria, backend, max_reasks=settings.max_reasks,
                           structured=settings.structured_output != "off")
    return YesNoJudge(criteria, backend, min_mass=settings.min_mass,
                      min_margin=settings.min_margin)


def judge_arrays(judge: Judge, images: Sequence[np.ndarray], classes: Sequence[str], *,
                 sample_ids: Sequence[str] | None = None, mm_per_px: float | None = None
                 ) -> list[JudgedRecord | None]:
    """Judge in-memory images (refine's on-policy rounds); records in input order (None where
    the request failed for good)."""
    if len(images) != len(classes):
        raise ValueError(f"{len(images)} images but {len(classes)} classes")
    ids = list(sample_ids) if sample_ids is not None else [f"{i:06d}" for i in range(len(images))]
    items = [JudgeItem(sid, str(c), image=np.asarray(a), mm_per_px=mm_per_px)
             for sid, c, a in zip(ids, classes, images, strict=True)]
    by_id = {o.item.sample_id: o.record for o in judge.judge(items)}
    return [by_id.get(sid) for sid in ids]


# ---------------------------------------------------------------------------------------------
# selection (judge filter; refine's accepted samples)


def select(records: Iterable[JudgedRecord], *, min_score: float | None = None,
           top_fraction: float | None = None, per_class_n: int | None = None,
           per_group: Callable[[JudgedRecord], Any] | None = None,
           order: Callable[[JudgedRecord], Any] | None = None,
           skip_empty_groups: bool = False) -> list[JudgedRecord]:
    """The records a filter keeps, per class, best first.

    Only ok records of valid images are eligible. ``min_score``: score >= S. ``top_fraction``:
    the best ceil(F * n) of each class's records (n counts every record of the class).
    ``per_class_n``: exactly N per class (the best N that pass ``min_score``; a class with fewer
    is an error). ``per_group``: the best record of each group (e.g. the candidates of one
    requested image, ``generate --oversample``); a group without an eligible record is an
    error, or left out with ``skip_empty_groups``. Ties keep the set's order (``order``,
    default the sample id).

    Raises:
        MedsynthError: a class has fewer than ``per_class_n`` eligible images, or a group none.
    """
    order = order or (lambda r: r.sample_id)
    by_class: dict[str, list[JudgedRecord]] = {}
    every: dict[str, int] = {}
    groups: dict[Any, list[JudgedRecord]] = {}
    for r in records:
        every[r.cls] = every.get(r.cls, 0) + 1
        by_class.setdefault(r.cls, [])
        if per_group is not None:
            groups.setdefault(per_group(r), [])
        if r.ok and r.image_valid and (min_score is None or r.score >= min_score - 1e-12):
            by_class[r.cls].append(r)
            if per_group is not None:
                groups[per_group(r)].append(r)
    passing = "valid" + ("" if min_score is None else f", score >= {min_score:g}")
    if per_group is not None:
        empty = [g for g, rs in groups.items() if not rs]
        if empty and not skip_empty_groups:
            raise MedsynthError(
                f"{len(empty)} requested image(s) have no eligible candidate ({passing}), "
                f"e.g. {empty[0]}",
                hint="lower --min-score, generate more candidates (--oversample), or leave "
                     "those requests out (--skip-empty-requests)")
        best = [sorted(sorted(rs, key=order), key=lambda r: -r.score)[0]
                for rs in groups.values() if rs]
        return sorted(best, key=lambda r: (r.cls, -r.score, order(r)))
    kept: list[JudgedRecord] = []
    for cls, rs in by_class.items():
        rs = sorted(rs, key=order)
        rs = sorted(rs, key=lambda r: -r.score)  # stable: ties keep the set's order
        if top_fraction is not None:
            rs = rs[:math.ceil(top_fraction * every[cls] - 1e-9)]
        if per_class_n is not None:
            if len(rs) < per_class_n:
                raise MedsynthError(
                    f"class {cls!r}: only {len(rs)} of {every[cls]} image(s) are eligible "
                    f"({passing}), fewer than --per-class-n {per_class_n}",
                    hint="lower --min-score, or generate more candidates (--oversample)")
            rs = rs[:per_class_n]
        kept += rs
    return kept
