"""The resolved configuration of one ``medsynth describe`` run (saved in the store's manifest)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Self

from pydantic import ConfigDict, Field, model_validator

from medsynth.choices import (
    DescribeBackend,
    DescribeModality,
    DescribeSplit,
    StructuredOutput,
    values,
)
from medsynth.recipe import Recipe

if TYPE_CHECKING:
    from medsynth.mllm.backend import BackendConfig

BACKENDS = values(DescribeBackend)
MODALITIES = values(DescribeModality)
SPLITS = values(DescribeSplit)

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]


class DescribeConfig(Recipe):
    """Options of ``medsynth describe``; validated on construction."""

    model_config = ConfigDict(strict=False)
    option_names: ClassVar[dict[str, str] | None] = {}

    dataset: str
    """Dataset folder (``medsynth data`` output)."""
    out: str
    """Store folder to write (or to continue with ``resume``)."""
    backend: DescribeBackend = "attributes"
    """``attributes`` (offline pixel measurements), ``openai`` (any OpenAI-compatible server) or
    ``transformers`` (a local vision-language model)."""
    model: str | None = None
    """Model name (openai; else $MEDSYNTH_OPENAI_MODEL) or path/name (transformers)."""
    base_url: str | None = None
    """OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (else $MEDSYNTH_OPENAI_BASE_URL,
    $OPENAI_BASE_URL)."""
    modality: DescribeModality = "auto"
    """Template family: derm, cxr, colon, mri, prostate, or auto (from the dataset's modality
    code; MR volumes get prostate)."""
    template: str | None = None
    """A user template YAML file (overrides ``modality``)."""
    split: DescribeSplit | None = None
    """Which split to describe: train, val, test or all. None (the default) = train when the
    dataset has a train split (the images the generator is trained on and conditioned with),
    else all."""
    concurrency: PosInt = 4
    """Requests in flight (openai) or images per batch (transformers, attributes workers)."""
    limit: NonNegInt | None = None
    """Describe at most this many images (after resume skipping), for trials."""
    resume: bool = False
    """Continue an existing store: images already described by this backend and model are skipped."""
    overwrite: bool = False
    """Delete an existing store first."""
    max_reasks: NonNegInt = 2
    """Invalid or incomplete answers are re-asked this many times, then recorded as failed."""
    timeout: Annotated[float, Field(gt=0)] = 120.0
    """Seconds per HTTP request (openai)."""
    request_retries: NonNegInt = 4
    """Retries of one HTTP request on 429, 5xx, timeouts and connection errors (with backoff)."""
    max_new_tokens: PosInt = 512
    """Answer length limit for the model."""
    temperature: float = 0.0
    """Sampling temperature (0 = greedy)."""
    seed: int = 0
    """Seed for the model's sampling (transformers) when temperature > 0."""
    structured_output: StructuredOutput = "auto"
    """openai: ``auto`` sends the answer's JSON schema as ``response_format`` and falls back to
    prompted JSON when the server refuses it; ``off`` never sends it. Answers are validated
    either way."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other; choose one")
        from medsynth.mllm.backend import model_server

        self.base_url, self.model = model_server(self.backend, self.base_url, self.model,
                                                 what="backend")
        return self

    def backend_config(self) -> BackendConfig:
        """The engine's settings for the model backends (openai, transformers)."""
        from medsynth.mllm.backend import BackendConfig

        return BackendConfig(kind=self.backend, model=str(self.model), base_url=self.base_url,
                             concurrency=self.concurrency, timeout=self.timeout,
                             retries=self.request_retries, max_tokens=self.max_new_tokens,
                             temperature=self.temperature, seed=self.seed,
                             structured_output=self.structured_output)
