"""generate's report step: one report per image, written by the configured writer.

The writers live in the shared :mod:`medsynth.clinical_reports` (evaluate reads reports with the same
parser). This module only connects them to a run: which report style the model's images get,
what each writer is told (class, the stored description's attributes or those its prompt
states, the seed, optionally the image), and where the model's raw answers are kept
(``reports/llm_answers.jsonl``, one line per image the ``llm`` writer was asked about).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsynth.artifacts import JsonlAppender
from medsynth.clinical_reports import (
    ReportResult,
    ReportWriterConfig,
    context_for,
    make_writer,
    report_family,
)
from medsynth.generate.conditioning import SampleSpec

ANSWERS_FILE = "reports/llm_answers.jsonl"


def writer_config(cfg: Any) -> ReportWriterConfig:
    """The report writer settings of a :class:`~medsynth.generate.config.GenerateConfig`."""
    return ReportWriterConfig(
        writer=cfg.report, backend=cfg.report_backend, model=cfg.report_model,
        base_url=cfg.report_base_url, with_image=cfg.report_with_image,
        max_reasks=cfg.report_max_reasks, concurrency=cfg.report_concurrency)


class ReportStep:
    """Writes the reports of each batch of a run (None writer = ``--report none``)."""

    def __init__(self, cfg: Any, out: Path, plan: list[SampleSpec], modality: str,
                 classes: list[str], rank: int = 0) -> None:
        self.config = writer_config(cfg)
        self.writer = make_writer(self.config)
        attrs = next((s.attributes for s in plan if s.attributes), {})
        self.family = report_family(modality, classes, attrs)
        self.modality = modality
        self.answers = JsonlAppender(out / ANSWERS_FILE.replace(".jsonl", f".rank{rank}.jsonl")) \
            if self.writer is not None and self.writer.name == "llm" else None
        self.n_fallback = 0

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def write(self, specs: list[SampleSpec], pixels: Any) -> dict[str, ReportResult]:
        """sample_id -> the report of each image of a batch."""
        if self.writer is None:
            return {}
        contexts = [context_for(sample_id=s.sample_id, cls=s.cls, family=self.family,
                                attributes=s.attributes, description=s.description, seed=s.seed,
                                modality=self.modality, image=px)
                    for s, px in zip(specs, pixels, strict=True)]
        results = self.writer.write(contexts)
        for ctx, res in zip(contexts, results, strict=True):
            if res.writer == "template-fallback":
                self.n_fallback += 1
            if self.answers is not None:
                self.answers.write({"sample_id": ctx.sample_id, "writer": res.writer,
                                    "warning": res.warning, "answers": res.raw})
        return {c.sample_id: r for c, r in zip(contexts, results, strict=True)}

    def info(self) -> dict[str, Any]:
        """What the manifest records about the reports."""
        if self.writer is None:
            return {"writer": "none"}
        return {**self.writer.info(), "family": self.family}

    def close(self) -> None:
        if self.answers is not None:
            self.answers.close()
        if self.writer is not None:
            self.writer.close()
