"""The sections of ``metrics.json`` (written by :func:`medsynth.evaluate.run.evaluate`), typed.

Types only: the file is plain JSON and every reader keeps reading it as such. The sections built
in ``run.py`` and the privacy section are spelled out; the benchmark, fidelity, adherence, CLIP
and reports sections are ``dict[str, Any]`` (their builders in ``benchmark.py``, ``fidelity.py``,
``adherence.py``, ``clip_features.py`` and ``reports_check.py`` document their keys).
"""

from __future__ import annotations

from typing import Any, TypedDict

from medsynth.metrics.privacy import ExcludedCounts, NearCopySummary


class RealSection(TypedDict):
    """``real``: the real dataset compared against."""

    path: str
    classes: list[str]
    modality: str
    channels: int
    n_train: int
    n_val: int
    n_test: int
    image_size: int


class SyntheticSection(TypedDict):
    """``synthetic[<set name>]``: one synthetic set."""

    path: str
    n_images: int
    per_class: dict[str, int]


class Flips(TypedDict):
    horizontal: bool
    vertical: bool


class ClassifierSection(TypedDict):
    """``classifier``: the downstream classifier's recipe."""

    name: str
    epochs: int
    patience: int
    device: str
    flips: Flips
    seeds: int


class ExtraReal(TypedDict):
    path: str
    n_images: int
    per_class: dict[str, int]


class BaselinesSection(TypedDict):
    """``baselines``: the non-generative arms and the oracle's extra real images."""

    names: list[str]
    extra_real: ExtraReal | None


class VolumesSection(TypedDict):
    """``volumes``: 3D runs only (None for 2D)."""

    size: int
    window: list[float]
    features: str
    fid_2_5d: dict[str, Any]


class ClosestPair(TypedDict):
    synthetic_id: str
    synthetic_class: str
    real_id: str
    real_class: str
    feature_distance: float
    pixel_distance: float


class PrivacySet(TypedDict):
    """``privacy.sets[<set name>]``: near-copies of one synthetic set in both spaces."""

    feature: NearCopySummary
    pixel: NearCopySummary
    closest_pairs: list[ClosestPair]


class PrivacySection(TypedDict):
    """``privacy``: nearest-real-image distances (:mod:`medsynth.metrics.privacy`)."""

    method: str
    reference: ExcludedCounts
    sets: dict[str, PrivacySet]


class _MetricsBody(TypedDict):
    real: RealSection
    synthetic: dict[str, SyntheticSection]
    classifier: ClassifierSection
    baselines: BaselinesSection
    warnings: list[str]
    benchmark: dict[str, Any] | None
    fidelity: dict[str, Any]
    privacy: PrivacySection
    adherence: dict[str, Any]
    volumes: VolumesSection | None
    clip: dict[str, Any] | None
    reports: dict[str, Any]


class Metrics(_MetricsBody, total=False):
    """The whole ``metrics.json``; ``timings_s`` is added once the report is written."""

    timings_s: dict[str, float]
