"""The closed vocabularies of medsynth's options, as ``Literal`` types, and the one comma-list
parser.

One definition per choice: the configs validate against these types (pydantic) and the CLI lists
them in ``--help`` (:func:`medsynth.options.choice`). Only ``typing`` here, so every command module
may import it without slowing ``medsynth --help``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

# --- shared -------------------------------------------------------------------------------------
Sampler = Literal["dpmsolver++", "ddim", "ddpm", "unipc", "rflow"]
"""Samplers of generate, refine's rounds and the training grids (medsynth.models.sampler)."""
Precision = Literal["auto", "fp32", "bf16"]
"""The network's precision at sampling time (generate, refine rounds)."""
Device = Literal["auto", "cpu", "cuda"]
Flip = Literal["auto", "yes", "no"]
LrSchedule = Literal["cosine", "constant"]
TextEncoderKind = Literal["auto", "encoder", "decoder", "clip"]
Format = Literal["png", "dicom", "nifti"]
Split = Literal["train", "val", "test"]
# --- train --------------------------------------------------------------------------------------
Stage = Literal["diffusion", "clip"]
DenoiserKind = Literal["diffusers", "monai"]
DenoiserChoice = Literal["auto", DenoiserKind]
InitText = Literal["pipeline", "own"]
TrainAdapter = Literal["full", "lora"]
LongText = Literal["chunks", "cut"]
CcellaLoss = Literal["focal", "ce"]
NoiseSchedule = Literal["ddpm", "rflow"]
BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]
MixedPrecision = Literal["auto", "no", "fp16", "bf16"]
DataCache = Literal["auto", "memory", "disk"]
ClipEncoder = Literal["small", "resnet10", "resnet18"]
ClipTextEncoderKind = Literal["auto", "encoder", "decoder"]
ClipSelect = Literal["best", "last"]
# --- data -------------------------------------------------------------------------------------
Voi = Literal["auto", "yes", "no"]
PixelType = Literal["auto", "uint8", "uint16", "int16", "float32"]
Normalize = Literal["none", "auto", "mr", "ct"]
# --- generate -----------------------------------------------------------------------------------
ClassInput = Literal["auto", "class", "text"]
DicomLayout = Literal["series", "enhanced"]
InitResize = Literal["pad", "crop"]
"""Also ``data import --resize``: the long side fits (pad) or the short side (crop)."""
InitPairing = Literal["any", "same", "other"]
ReportWriter = Literal["template", "llm", "none"]
ReportBackend = Literal["openai", "transformers"]
# --- evaluate -----------------------------------------------------------------------------------
Classifier = Literal["small", "resnet10", "resnet18", "resnet34", "densenet121", "efficientnet-b0"]
Baseline = Literal["augment", "oracle"]
# --- describe -----------------------------------------------------------------------------------
DescribeBackend = Literal["attributes", "openai", "transformers"]
DescribeModality = Literal["auto", "derm", "cxr", "colon", "mri", "prostate", "ct"]
DescribeSplit = Literal["all", "train", "val", "test"]
StructuredOutput = Literal["auto", "off"]
# --- judge --------------------------------------------------------------------------------------
JudgeBackend = Literal["measure", "real-features", "openai", "transformers"]
ValidateBackend = Literal["real-features", "measure"]
HeldOutSplit = Literal["test", "val"]
# --- refine -------------------------------------------------------------------------------------
RefineMethod = Literal["dpo", "rwr"]
RefineAdapter = Literal["lora", "full"]
Pairing = Literal["all", "extremes"]


def values(lit: object) -> tuple[str, ...]:
    """The values of a ``Literal`` type, in their order."""
    return tuple(str(v) for v in get_args(lit))


def comma_list(values: str | Iterable[str] | None, *, lower: bool = False) -> list[str]:
    """The one comma-list parser: ``"a, b"`` or ``["a,b", "c"]`` (a repeated option) ->
    ``["a", "b", "c"]``; blanks dropped, order kept, ``None`` -> ``[]``."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    return [p.lower() for p in out] if lower else out


def choice_list(values: str | Iterable[str] | None, choices: Sequence[str], *, option: str,
                noun: str) -> list[str]:
    """A comma list of ``choices`` (lower-cased, order kept); anything else, or nothing, is
    refused naming ``option``: ``--format: unknown format(s) ['gif']; choose from ...``."""
    given = comma_list(values, lower=True)
    bad = [v for v in given if v not in choices]
    if bad or not given:
        raise ValueError(f"{option}: unknown {noun}(s) {bad or given}; choose from "
                         f"{', '.join(choices)}")
    return given
