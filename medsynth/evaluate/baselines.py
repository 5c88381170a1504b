"""The baselines a reviewer asks for, beside real-only: standard augmentation and more real data.

``augment``: the arm's real images with standard augmentation for the modality: the flips the
modality allows (applied to every arm by the classifier loop), a small random affine (rotation
up to 10 degrees, scale and translation up to 6 %; MONAI's ``AffineTransform``), intensity
jitter (brightness, offset, gamma: MONAI's Rand*Intensity/RandAdjustContrast formulas, batched)
and, on RGB images, per-channel (colour) jitter. Same budget as the
real+synthetic arm: the real images are repeated, each draw augmented afresh, to as many images
per class as real+synthetic has, and trained with the same epochs and early stopping.

``oracle``: the arm's real images plus as many EXTRA real images per class as the synthetic set
adds, drawn (per seed) from a second real dataset the user gives (``--extra-real``). It says what
more real data would have bought; "synthetic recovers X % of the oracle gain" compares to it. The
extra images must not be the test images: exact duplicates (same decoded pixels) of the real test
split are refused, duplicates of the real training split are reported.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import BadUsageError, MedsynthError
from medsynth.evaluate.inputs import ImageSet, stack_images

BASELINES = ("augment", "oracle")
"""Baseline arms ``--baselines`` can add."""
ROTATE_DEG = 10.0
"""Largest rotation of the augmentation, in degrees."""
SHIFT_SCALE = 0.06
"""Largest translation (share of the image side) and scale change of the augmentation."""


def parse_baselines(text: str | list[str] | None) -> list[str]:
    """``"augment,oracle"`` -> ``["augment", "oracle"]`` (validated, in a fixed order)."""
    items = text if isinstance(text, list) else str(text or "").split(",")
    names = [s.strip().lower() for s in items if s and s.strip() and s.strip().lower() != "none"]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise BadUsageError(f"--baselines: unknown baseline(s) {bad}; choose from "
                            f"{', '.join(BASELINES)} (or none)")
    return [b for b in BASELINES if b in names]


def augmenter(channels: int, size: int, seed: int) -> Callable[[Any], Any]:
    """A seeded batch augmentation (N, C, S, S) or, for volumes, (N, C, S, S, S) in [0, 1] ->
    same shape.

    Per image, each with its own random draw: a small affine (MONAI's batched
    ``AffineTransform`` layer; probability 0.8; volumes rotate in the axial plane and scale and
    shift along all three axes), then MONAI's ``RandScaleIntensity`` (factor +-0.08, per
    channel on RGB = colour jitter) and ``RandShiftIntensity`` (+-0.04, brightness),
    probability 0.8 each, and
    ``RandAdjustContrast`` (gamma 0.8-1.25; probability 0.5) written as batched tensor
    operations with the same formulas: MONAI's per-image transforms cost about 4.5 ms an image
    on this CPU, 40 times this batch version, and would dominate the classifier's budget.
    ``size`` is unused (the affine works in normalised coordinates); kept for the signature.
    """
    import torch
    from monai.networks.layers import AffineTransform

    gen = torch.Generator().manual_seed(int(seed))
    warp = AffineTransform(normalized=True, mode="bilinear", padding_mode="border",
                           align_corners=False, reverse_indexing=False)
    colour = channels > 1
    rot_max = math.radians(ROTATE_DEG)

    def uniform(lo: float, hi: float, *shape: int) -> Any:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    def chance(p: float, n: int) -> Any:
        return (torch.rand(n, generator=gen) < p).float()

    def apply(xb: Any) -> Any:
        n, dims = xb.shape[0], xb.ndim - 2
        spatial = tuple(range(2, xb.ndim))
        per_image = (n,) + (1,) * (xb.ndim - 1)  # broadcast one value per image
        on = chance(0.8, n)
        rot = uniform(-rot_max, rot_max, n) * on
        scale = 1 + uniform(-SHIFT_SCALE, SHIFT_SCALE, n) * on
        shift = uniform(-2 * SHIFT_SCALE, 2 * SHIFT_SCALE, n, dims) * on[:, None]  # [-1, 1]
        # the grid's first two coordinates are width and height: the (axial) in-plane rotation
        theta = torch.zeros(n, dims, dims + 1)
        cos, sin = torch.cos(rot) / scale, torch.sin(rot) / scale
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        if dims == 3:
            theta[:, 2, 2] = 1 / scale
        theta[:, :, dims] = shift
        x = warp(xb.float(), theta)
        k = channels if colour else 1
        x = x * (1 + uniform(-0.08, 0.08, n, k, *(1,) * dims)
                 * chance(0.8, n).reshape(per_image))
        x = x + uniform(-0.04, 0.04, *per_image) * chance(0.8, n).reshape(per_image)
        gamma = torch.exp(uniform(math.log(0.8), math.log(1.25), n))
        gamma = torch.where(chance(0.5, n) > 0, gamma, torch.ones_like(gamma)).reshape(per_image)
        lo = x.amin(dim=(1, *spatial), keepdim=True)
        span = (x.amax(dim=(1, *spatial), keepdim=True) - lo).clamp_min(1e-7)
        x = lo + span * ((x - lo) / span).clamp_min(0) ** gamma
        return x.clamp_(0, 1)

    return apply


def repeat_to(real: ImageSet, counts: dict[int, int], seed: int) -> ImageSet:
    """``real`` repeated per class to ``len(real of class k) + counts[k]`` images (shuffled)."""
    rng = np.random.default_rng(seed)
    y = real.y.numpy()
    keep: list[int] = []
    for k in np.unique(y):
        idx = np.nonzero(y == k)[0]
        total = len(idx) + int(counts.get(int(k), 0))
        reps = np.concatenate([rng.permutation(idx) for _ in range(math.ceil(total / len(idx)))])
        keep += reps[:total].tolist()
    return real.subset(keep, name=f"{real.name}+augment")


def draw_extra(extra: ImageSet, counts: dict[int, int], seed: int) -> ImageSet:
    """``counts[k]`` extra real images of every class k (all there are, when fewer), seeded."""
    rng = np.random.default_rng([seed, 7])
    y = extra.y.numpy()
    keep: list[int] = []
    for k, n in counts.items():
        idx = np.nonzero(y == k)[0]
        keep += rng.permutation(idx)[:n].tolist()
    return extra.subset(sorted(keep), name=f"{extra.name}@seed{seed}")


def _pixel_hash(array: np.ndarray) -> str:
    h = hashlib.sha1(str((array.shape, array.dtype.str)).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def load_extra_real(path: Path, real: Any, size: int, classes: list[str]
                    ) -> tuple[ImageSet, list[str]]:
    """The oracle's extra real images (every split of the dataset at ``path``), leakage-checked.

    Refused: the same dataset as ``--real``, unknown classes, another channel count, or any
    image whose decoded pixels equal a real test image. Returned warnings: classes it lacks,
    duplicates of real training images.
    """
    from medsynth.imaging.dataset import open_dataset
    from medsynth.ui import track

    ds = open_dataset(path)
    where = str(ds.root)
    if ds.sha256 == real.sha256 or ds.root.resolve() == real.root.resolve():
        raise MedsynthError(f"{where}: --extra-real is the --real dataset itself; the oracle "
                            "needs other real images of the same classes")
    if int(ds.manifest.outputs.get("spatial_dims", 2)) != 2:
        raise MedsynthError(f"{where}: --extra-real must hold 2D images (this one is 3D)")
    unknown = sorted(set(ds.classes) - set(classes))
    if unknown:
        raise MedsynthError(f"{where}: --extra-real class(es) {unknown} are not classes of "
                            f"{real.root} ({classes})")
    if ds.channels != real.channels:
        raise MedsynthError(f"{where}: --extra-real has {ds.channels}-channel images, "
                            f"{real.root} has {real.channels}")
    warnings = []
    missing = sorted(set(classes) - set(ds.classes))
    if missing:
        warnings.append(f"--extra-real {ds.root.name}: no images of {missing}; the oracle adds "
                        "none there")
    hashes = {split: {_pixel_hash(real.load(r).array): str(r["image_id"])
                      for _, r in real.split(split).iterrows()} for split in ("test", "train")}
    arrays, labels, ids, leaks, dups = [], [], [], [], 0
    for _, row in track(list(ds.table.iterrows()), "loading extra real"):
        a = ds.load(row).array
        if a.ndim != 3:
            raise MedsynthError(f"{ds.path_of(row)}: evaluate needs 2D images, got shape "
                                f"{a.shape}")
        h = _pixel_hash(a)
        if h in hashes["test"]:
            leaks.append(f"{row['image_id']} = test {hashes['test'][h]}")
        dups += h in hashes["train"]
        arrays.append(a)
        labels.append(str(row["class"]))
        ids.append(str(row["image_id"]))
    if leaks:
        raise MedsynthError(
            f"{where}: {len(leaks)} --extra-real image(s) are real test images "
            f"(e.g. {leaks[0]}); the oracle would train on the test set",
            hint="give extra images that are disjoint from the test split")
    if dups:
        warnings.append(f"--extra-real {ds.root.name}: {dups} image(s) duplicate real training "
                        "images; the oracle adds less new data than it claims")
    index = {c: i for i, c in enumerate(classes)}
    import torch

    y = torch.tensor([index[c] for c in labels], dtype=torch.long)
    return ImageSet(f"extra-{ds.root.name}", stack_images(arrays, size), y, ids), warnings
