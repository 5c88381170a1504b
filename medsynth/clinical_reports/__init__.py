"""Reports for generated images (MedCoDi-M): one interface, two writers, shared by generate and
evaluate.

* :class:`~medsynth.clinical_reports.template.TemplateWriter` (``template``, the offline default):
  deterministic text from the class and the conditioning attributes, phrasing drawn from the
  image's seed;
* :class:`~medsynth.clinical_reports.llm.LLMWriter` (``llm``): a model writes it through the shared MLLM
  engine, checked against the conditioning, re-asked, the template report as the fallback.

:func:`context_for` builds what a writer is given from a sample's class, the stored record's
attributes (or the attributes parsed from a free-text prompt) and its seed;
:func:`medsynth.clinical_reports.parse.parse_report` reads attributes back from any report.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from medsynth.clinical_reports.base import (
    FAMILIES,
    Report,
    ReportContext,
    ReportResult,
    ReportWriter,
    normalize,
    parse_sections,
    report_family,
)
from medsynth.clinical_reports.parse import parse_report, read_report
from medsynth.clinical_reports.template import TemplateWriter, template_report
from medsynth.errors import BadUsageError

WRITERS = ("template", "llm", "none")

__all__ = ["FAMILIES", "WRITERS", "Report", "ReportContext", "ReportResult", "ReportWriter",
           "ReportWriterConfig", "TemplateWriter", "context_for", "make_writer", "normalize",
           "parse_report", "parse_sections", "read_report", "report_family",
           "template_report"]


def context_for(*, sample_id: str, cls: str, family: str, attributes: dict[str, Any] | None,
                description: str = "", seed: int = 0, modality: str = "",
                image: Any = None) -> ReportContext:
    """A writer's context: the stored attributes, else those the description states.

    A free-text description is read clause by clause (negation and scope respected); where it
    states more than that reading could turn into attributes, the report carries the text."""
    attrs = normalize(family, attributes) if attributes else {}
    carry = False
    if not attrs and description:
        read, unread = read_report(family, description)
        attrs = normalize(family, read)
        carry = bool(unread)
    return ReportContext(sample_id=sample_id, cls=cls, family=family, attributes=attrs,
                         description=description, seed=seed, image=image, modality=modality,
                         carry_prompt=carry)


@dataclasses.dataclass
class ReportWriterConfig:
    """Which writer writes the reports, and how the ``llm`` one reaches its model."""

    writer: str = "template"
    """``template`` (offline default), ``llm`` or ``none`` (no report files)."""
    backend: str = "openai"
    """llm: ``openai`` (any OpenAI-compatible server) or ``transformers`` (a local model)."""
    model: str | None = None
    """llm: model name (openai) or local folder / cached name (transformers)."""
    base_url: str | None = None
    """llm, openai: base URL, e.g. http://127.0.0.1:8000/v1."""
    with_image: bool = False
    """llm: show the model the generated image too (a vision-language model)."""
    max_reasks: int = 2
    """llm: re-asks of an invalid report before the template report is used."""
    concurrency: int = 4
    """llm: requests in flight (openai) or per batch (transformers)."""
    timeout: float = 120.0
    """llm, openai: seconds per request."""
    max_tokens: int = 400
    """llm: answer length limit."""

    def __post_init__(self) -> None:
        if self.writer not in WRITERS:
            raise BadUsageError(f"--report {self.writer!r}: choose from {', '.join(WRITERS)}")
        if self.writer == "llm":
            if self.backend not in ("openai", "transformers"):
                raise BadUsageError(f"--report-backend {self.backend!r}: choose openai or "
                                    "transformers")
            if not self.model:
                raise BadUsageError("--report llm needs --report-model (a model name or folder)")
            if self.backend == "openai" and not self.base_url:
                raise BadUsageError("--report llm with the openai backend needs "
                                    "--report-base-url (e.g. http://127.0.0.1:8000/v1)")
        if self.max_reasks < 0:
            raise BadUsageError(f"--report-max-reasks must be >= 0, got {self.max_reasks}")


def make_writer(cfg: ReportWriterConfig) -> ReportWriter | None:
    """The writer ``cfg`` names (None for ``none``); the llm one builds its backend now."""
    if cfg.writer == "none":
        return None
    if cfg.writer == "template":
        return TemplateWriter()
    from medsynth.clinical_reports.llm import LLMWriter
    from medsynth.mllm import BackendConfig, make_backend

    backend = make_backend(BackendConfig(kind=cfg.backend, model=str(cfg.model),
                                         base_url=cfg.base_url, concurrency=cfg.concurrency,
                                         timeout=cfg.timeout, max_tokens=cfg.max_tokens))
    return LLMWriter(backend, max_reasks=cfg.max_reasks, with_image=cfg.with_image,
                     max_tokens=cfg.max_tokens)
