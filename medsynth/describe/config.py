"""The resolved configuration of one ``medsynth describe`` run (saved in the store's manifest)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from medsynth.errors import BadUsageError

if TYPE_CHECKING:
    from medsynth.mllm.backend import BackendConfig

BACKENDS = ("attributes", "openai", "transformers")
MODALITIES = ("auto", "derm", "cxr", "colon", "mri", "prostate", "ct")
SPLITS = ("all", "train", "val", "test")


@dataclasses.dataclass
class DescribeConfig:
    """Options of ``medsynth describe``; validated on construction."""

    dataset: str
    """Dataset folder (``medsynth data`` output)."""
    out: str
    """Store folder to write (or to continue with ``resume``)."""
    backend: str = "attributes"
    """``attributes`` (offline pixel measurements), ``openai`` (any OpenAI-compatible server) or
    ``transformers`` (a local vision-language model)."""
    model: str | None = None
    """Model name (openai; else $MEDSYNTH_OPENAI_MODEL) or path/name (transformers)."""
    base_url: str | None = None
    """OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (else $MEDSYNTH_OPENAI_BASE_URL,
    $OPENAI_BASE_URL)."""
    modality: str = "auto"
    """Template family: derm, cxr, colon, mri, prostate, or auto (from the dataset's modality
    code; MR volumes get prostate)."""
    template: str | None = None
    """A user template YAML file (overrides ``modality``)."""
    split: str | None = None
    """Which split to describe: train, val, test or all. None (the default) = train when the
    dataset has a train split (the images the generator is trained on and conditioned with),
    else all."""
    concurrency: int = 4
    """Requests in flight (openai) or images per batch (transformers, attributes workers)."""
    limit: int | None = None
    """Describe at most this many images (after resume skipping), for trials."""
    resume: bool = False
    """Continue an existing store: images already described by this backend and model are skipped."""
    overwrite: bool = False
    """Delete an existing store first."""
    max_reasks: int = 2
    """Invalid or incomplete answers are re-asked this many times, then recorded as failed."""
    timeout: float = 120.0
    """Seconds per HTTP request (openai)."""
    request_retries: int = 4
    """Retries of one HTTP request on 429, 5xx, timeouts and connection errors (with backoff)."""
    max_new_tokens: int = 512
    """Answer length limit for the model."""
    temperature: float = 0.0
    """Sampling temperature (0 = greedy)."""
    seed: int = 0
    """Seed for the model's sampling (transformers) when temperature > 0."""
    structured_output: str = "auto"
    """openai: ``auto`` sends the answer's JSON schema as ``response_format`` and falls back to
    prompted JSON when the server refuses it; ``off`` never sends it. Answers are validated
    either way."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BadUsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.modality not in MODALITIES:
            raise BadUsageError(f"--modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if self.split is not None and self.split not in SPLITS:
            raise BadUsageError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.concurrency < 1:
            raise BadUsageError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.limit is not None and self.limit < 0:
            raise BadUsageError(f"--limit must be >= 0, got {self.limit}")
        if self.max_reasks < 0 or self.request_retries < 0:
            raise BadUsageError("--max-reasks and --request-retries must be >= 0")
        if self.timeout <= 0:
            raise BadUsageError(f"--timeout must be > 0, got {self.timeout}")
        if self.structured_output not in ("auto", "off"):
            raise BadUsageError("--structured-output must be auto or off, got "
                                f"{self.structured_output!r}")
        if self.max_new_tokens < 1:
            raise BadUsageError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.resume and self.overwrite:
            raise BadUsageError("--resume and --overwrite contradict each other; choose one")
        if self.backend == "openai":
            self.base_url = (self.base_url or os.environ.get("MEDSYNTH_OPENAI_BASE_URL")
                             or os.environ.get("OPENAI_BASE_URL"))
            self.model = (self.model or os.environ.get("MEDSYNTH_OPENAI_MODEL")
                          or os.environ.get("OPENAI_MODEL"))
            if not self.base_url:
                raise BadUsageError("the openai backend needs --base-url (or $MEDSYNTH_OPENAI_BASE_URL)",
                                    hint="e.g. --base-url http://127.0.0.1:8000/v1")
            if not self.model:
                raise BadUsageError("the openai backend needs --model (or $MEDSYNTH_OPENAI_MODEL)")
        if self.backend == "transformers" and not self.model:
            raise BadUsageError("the transformers backend needs --model PATH_OR_NAME")

    def backend_config(self) -> BackendConfig:
        """The engine's settings for the model backends (openai, transformers)."""
        from medsynth.mllm.backend import BackendConfig

        return BackendConfig(kind=self.backend, model=str(self.model), base_url=self.base_url,
                             concurrency=self.concurrency, timeout=self.timeout,
                             retries=self.request_retries, max_tokens=self.max_new_tokens,
                             temperature=self.temperature, seed=self.seed,
                             structured_output=self.structured_output)
