"""The evaluation recipe: a pydantic model validated on creation."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from medsynth.choices import Baseline, Classifier, Device, values
from medsynth.errors import BadUsageError
from medsynth.recipe import LaxPath, Recipe

CLASSIFIERS = values(Classifier)
"""MONAI networks the benchmark can train (``small`` = monai.networks.nets.Classifier)."""

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]


@dataclasses.dataclass(frozen=True)
class Fraction:
    """How much of the real training split a benchmark arm uses."""

    label: str
    """As written: ``1.0`` and ``0.1`` are fractions; ``20`` or ``20/class`` is 20 images per class."""
    fraction: float | None = None
    """Share of each class's real training images (at least one image per class)."""
    per_class: int | None = None
    """Fixed number of real training images per class."""


def parse_fraction(text: str) -> Fraction:
    """``"0.1"`` -> 10 % of each class; ``"20"`` or ``"20/class"`` -> 20 images per class.

    A bare ``"1"`` is refused as ambiguous: write ``1.0`` (all images) or ``1/class``.
    """
    s = str(text).strip().lower()
    try:
        if s.endswith("/class"):
            n = int(s[: -len("/class")])
            if n < 1:
                raise ValueError
            return Fraction(label=f"{n}/class", per_class=n)
        if "." in s or "e" in s:
            f = float(s)
            if not 0 < f <= 1:
                raise ValueError
            return Fraction(label=f"{f:g}" if f < 1 else "1.0", fraction=f)
        n = int(s)
        if n == 1:
            raise BadUsageError("--real-fraction: '1' is ambiguous; write 1.0 for all real "
                                "training images or 1/class for one image per class")
        if n < 1:
            raise ValueError
        return Fraction(label=f"{n}/class", per_class=n)
    except ValueError:
        raise BadUsageError(
            f"--real-fraction: {text!r} is neither a fraction in (0, 1] (write 1.0, 0.1) "
            "nor a number of images per class (20 or 20/class)"
        ) from None


class EvaluateConfig(Recipe):
    """Recipe of ``medsynth evaluate`` (CLI options fill it)."""

    model_config = ConfigDict(strict=False)
    error_prefix: ClassVar[str] = "evaluate config"

    real: LaxPath
    """Real dataset folder (stage ``data``) with train, val and test splits."""
    synthetic: list[LaxPath]
    """Synthetic set folders (stage ``generate``); each is benchmarked on its own."""
    out: LaxPath
    """Report folder to write."""
    classifier: Classifier = "small"
    """Downstream classifier: one of CLASSIFIERS (MONAI networks, 2D)."""
    seeds: PosInt = 5
    """Seeds per benchmark arm (training noise; the intervals resample seeds and test images)."""
    real_fractions: list[str] = Field(default_factory=lambda: ["1.0", "0.1"], min_length=1)
    """Real training data per arm: fractions (``1.0``, ``0.1``) or images per class (``20``)."""
    size: Annotated[int, Field(ge=8, le=1024)] | None = None
    """Classifier input size in pixels (None = the data's size, at most 64)."""
    epochs: PosInt = 30
    """Maximum classifier training epochs (early stopping on the real val split)."""
    patience: NonNegInt = 8
    """Epochs without improvement of the val loss before training stops."""
    batch_size: PosInt = 32
    """Classifier batch size."""
    lr: Annotated[float, Field(gt=0, lt=1)] = 1e-3
    """Classifier learning rate (AdamW)."""
    baselines: list[Baseline] = Field(default_factory=lambda: list[Baseline](["augment"]))
    """Baseline arms besides real-only: ``augment`` (standard augmentation, same budget) and
    ``oracle`` (real + as many extra real images as synthetic ones; needs ``extra_real``, and is
    added whenever ``extra_real`` is given). ``[]`` or ``["none"]``: real-only alone."""
    extra_real: LaxPath | None = None
    """Dataset of extra real images (other images of the same classes) for the oracle arm."""
    bootstrap: Annotated[int, Field(ge=200, le=100_000)] = 2000
    """Bootstrap replicates (test images and seeds resampled together) behind every interval."""
    max_synthetic_per_class: PosInt | None = None
    """Use at most this many synthetic images per class (None = all)."""
    feature_size: PosInt = 128
    """Resize images to this size for the EfficientNet-Lite0 feature extractor (224 = native)."""
    knn_k: PosInt = 3
    """k of the k-NN manifolds of precision/recall (Kynkaanniemi et al. use 3)."""
    msssim_pairs: PosInt = 64
    """Random image pairs per class for the MS-SSIM diversity."""
    near_copy_quantile: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    """Near-copy threshold = this quantile of the real test -> real train nearest-neighbour distance."""
    n_pairs: PosInt = 8
    """Closest synthetic/real pairs shown in the report."""
    independent_model: bool = False
    """Allow generators trained on another dataset than --real (the user vouches for no overlap)."""
    benchmark: bool = True
    """Run the downstream classifier benchmark (the slow part)."""
    clip: LaxPath | None = None
    """CLIP folder (``medsynth train --stage clip``): in-domain FID/KID/precision/recall,
    image–text alignment and real test retrieval (None = not measured)."""
    clip_store: LaxPath | None = None
    """Description store with the real test images' texts (None = the CLIP model's store)."""
    device: Device = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: PosInt | None = None
    """CPU threads for torch (None = 1 for the small classifier, whose layers are too small to
    gain from more on a shared machine; torch's default for the others)."""
    workers: PosInt | None = None
    """Processes for the classifier runs (None = ``MEDSYNTH_THREADS`` or every CPU when each run
    takes one thread on the CPU, else 1). Every run is seeded on its own, so the figures do not
    depend on it."""
    resume: bool = False
    """Continue a killed evaluation in --out (finished benchmark runs are kept)."""
    overwrite: bool = False
    """Delete an earlier evaluate output in --out first."""

    @field_validator("baselines", mode="before")
    @classmethod
    def _baselines(cls, v: Any) -> list[str]:
        from medsynth.evaluate.baselines import parse_baselines

        return parse_baselines(v)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.clip_store is not None and self.clip is None:
            raise ValueError("--clip-store needs --clip (the texts are for the CLIP model)")
        if "oracle" in self.baselines and self.extra_real is None:
            raise ValueError("the oracle baseline needs --extra-real DATASET (other real images of "
                             "the same classes, e.g. demo phantoms drawn with another --seed)")
        if self.extra_real is not None and "oracle" not in self.baselines:
            self.baselines = [*self.baselines, "oracle"]
        if not self.synthetic:
            raise ValueError("give at least one --synthetic set")
        if len({p.resolve() for p in self.synthetic}) != len(self.synthetic):
            raise ValueError("the same --synthetic set is given twice")
        labels = [parse_fraction(f).label for f in self.real_fractions]
        if len(set(labels)) != len(labels):
            raise ValueError(f"repeated real fraction in {self.real_fractions}")
        return self

    @property
    def fractions(self) -> list[Fraction]:
        """The parsed real fractions, in the order given."""
        return [parse_fraction(f) for f in self.real_fractions]
