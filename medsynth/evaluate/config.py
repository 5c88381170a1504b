"""The evaluation recipe: a typed dataclass validated on creation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medsynth.errors import BadUsageError

CLASSIFIERS = ("small", "resnet10", "resnet18", "resnet34", "densenet121", "efficientnet-b0")
"""MONAI networks the benchmark can train (``small`` = monai.networks.nets.Classifier)."""


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


@dataclasses.dataclass
class EvaluateConfig:
    """Recipe of ``medsynth evaluate`` (CLI options fill it)."""

    real: Path
    """Real dataset folder (stage ``data``) with train, val and test splits."""
    synthetic: list[Path]
    """Synthetic set folders (stage ``generate``); each is benchmarked on its own."""
    out: Path
    """Report folder to write."""
    classifier: str = "small"
    """Downstream classifier: one of CLASSIFIERS (MONAI networks, 2D)."""
    seeds: int = 5
    """Seeds per benchmark arm (training noise; the intervals resample seeds and test images)."""
    real_fractions: list[str] = dataclasses.field(default_factory=lambda: ["1.0", "0.1"])
    """Real training data per arm: fractions (``1.0``, ``0.1``) or images per class (``20``)."""
    size: int | None = None
    """Classifier input size in pixels (None = the data's size, at most 64)."""
    epochs: int = 30
    """Maximum classifier training epochs (early stopping on the real val split)."""
    patience: int = 8
    """Epochs without improvement of the val loss before training stops."""
    batch_size: int = 32
    """Classifier batch size."""
    lr: float = 1e-3
    """Classifier learning rate (AdamW)."""
    baselines: list[str] = dataclasses.field(default_factory=lambda: ["augment"])
    """Baseline arms besides real-only: ``augment`` (standard augmentation, same budget) and
    ``oracle`` (real + as many extra real images as synthetic ones; needs ``extra_real``, and is
    added whenever ``extra_real`` is given). ``[]`` or ``["none"]``: real-only alone."""
    extra_real: Path | None = None
    """Dataset of extra real images (other images of the same classes) for the oracle arm."""
    bootstrap: int = 2000
    """Bootstrap replicates (test images and seeds resampled together) behind every interval."""
    max_synthetic_per_class: int | None = None
    """Use at most this many synthetic images per class (None = all)."""
    feature_size: int = 128
    """Resize images to this size for the EfficientNet-Lite0 feature extractor (224 = native)."""
    knn_k: int = 3
    """k of the k-NN manifolds of precision/recall (Kynkaanniemi et al. use 3)."""
    msssim_pairs: int = 64
    """Random image pairs per class for the MS-SSIM diversity."""
    near_copy_quantile: float = 0.01
    """Near-copy threshold = this quantile of the real test -> real train nearest-neighbour distance."""
    n_pairs: int = 8
    """Closest synthetic/real pairs shown in the report."""
    independent_model: bool = False
    """Allow generators trained on another dataset than --real (the user vouches for no overlap)."""
    benchmark: bool = True
    """Run the downstream classifier benchmark (the slow part)."""
    clip: Path | None = None
    """CLIP folder (``medsynth train --stage clip``): in-domain FID/KID/precision/recall,
    image–text alignment and real test retrieval (None = not measured)."""
    clip_store: Path | None = None
    """Description store with the real test images' texts (None = the CLIP model's store)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int | None = None
    """CPU threads for torch (None = 1 for the small classifier, whose layers are too small to
    gain from more on a shared machine; torch's default for the others)."""
    resume: bool = False
    """Continue a killed evaluation in --out (finished benchmark runs are kept)."""
    overwrite: bool = False
    """Delete an earlier evaluate output in --out first."""

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise BadUsageError(f"evaluate config: {msg}")

        self.real = Path(self.real)
        self.out = Path(self.out)
        self.synthetic = [Path(p) for p in self.synthetic]
        self.clip = Path(self.clip) if self.clip is not None else None
        self.clip_store = Path(self.clip_store) if self.clip_store is not None else None
        if self.clip_store is not None and self.clip is None:
            bad("--clip-store needs --clip (the texts are for the CLIP model)")
        from medsynth.evaluate.baselines import parse_baselines

        self.baselines = parse_baselines(self.baselines)
        self.extra_real = Path(self.extra_real) if self.extra_real is not None else None
        if "oracle" in self.baselines and self.extra_real is None:
            bad("the oracle baseline needs --extra-real DATASET (other real images of the "
                "same classes, e.g. demo phantoms drawn with another --seed)")
        if self.extra_real is not None and "oracle" not in self.baselines:
            self.baselines = parse_baselines([*self.baselines, "oracle"])
        if not 200 <= self.bootstrap <= 100_000:
            bad("bootstrap must be in [200, 100000] replicates")
        if not self.synthetic:
            bad("give at least one --synthetic set")
        if len({p.resolve() for p in self.synthetic}) != len(self.synthetic):
            bad("the same --synthetic set is given twice")
        if self.classifier not in CLASSIFIERS:
            bad(f"classifier {self.classifier!r} is not one of {', '.join(CLASSIFIERS)}")
        if self.seeds < 1:
            bad("seeds must be >= 1")
        if not self.real_fractions:
            bad("give at least one --real-fraction")
        labels = [parse_fraction(f).label for f in self.real_fractions]
        if len(set(labels)) != len(labels):
            bad(f"repeated real fraction in {self.real_fractions}")
        if self.size is not None and not 8 <= self.size <= 1024:
            bad("size must be in [8, 1024]")
        for name in ("epochs", "batch_size", "knn_k", "msssim_pairs", "n_pairs", "feature_size"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1")
        if self.patience < 0:
            bad("patience must be >= 0")
        if not 0 < self.lr < 1:
            bad("lr must be in (0, 1)")
        if self.max_synthetic_per_class is not None and self.max_synthetic_per_class < 1:
            bad("max_synthetic_per_class must be >= 1")
        if not 0 < self.near_copy_quantile < 0.5:
            bad("near_copy_quantile must be in (0, 0.5)")
        if self.threads is not None and self.threads < 1:
            bad("threads must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            bad("device must be auto, cpu or cuda")

    @property
    def fractions(self) -> list[Fraction]:
        """The parsed real fractions, in the order given."""
        return [parse_fraction(f) for f in self.real_fractions]
