"""Open the real dataset and the synthetic sets, check they fit together, refuse leakage.

Synthetic sets are read by the shared reader (:mod:`medsynth.synthset`); the leakage guard
follows their whole lineage (:func:`medsynth.artifacts.walk_lineage`): the generating model and
every model it was refined from.

Images become float tensors in [0, 1] of one common size, channel-first, with the data's own
channel count (grayscale stays one channel; only the feature extractor makes 3 channels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medsynth.artifacts import Manifest
from medsynth.errors import MedsynthError
from medsynth.imaging.dataset import Dataset, open_dataset
from medsynth.imaging.readers import Image, read_image
from medsynth.metrics.images import measure_size, stack_images, to_unit
from medsynth.synthset import IMAGE_COLUMNS, SAMPLES_CSV, SyntheticSet, open_synthetic

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = ["IMAGE_COLUMNS", "SAMPLES_CSV", "ImageSet", "SyntheticSet", "check_compatible",
           "check_leakage", "check_real", "default_size", "load_real", "load_synthetic",
           "open_inputs", "open_synthetic", "stack_images", "synthetic_arrays", "to_unit"]


@dataclasses.dataclass
class ImageSet:
    """Images of one source (a real split or a synthetic set), aligned with their labels."""

    name: str
    x: torch.Tensor
    """Float tensor (N, C, S, S) in [0, 1]."""
    y: torch.Tensor
    """Long tensor (N,) of class indices into the real dataset's class list."""
    ids: list[str]
    """image_id (real) or sample_id (synthetic) per image."""

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: Sequence[int] | np.ndarray, name: str | None = None) -> ImageSet:
        import torch

        index = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return ImageSet(name or self.name, self.x[index], self.y[index],
                        [self.ids[int(i)] for i in index])

    def of_class(self, k: int) -> ImageSet:
        return self.subset(np.nonzero(self.y.numpy() == k)[0])


def _splits(m: Manifest) -> list[str]:
    return [str(x) for x in (m.config.get("train_splits") or m.config.get("splits") or [])]


def check_leakage(synth: SyntheticSet, real: Dataset, *, independent_model: bool) -> list[str]:
    """Refuse a synthetic set whose generator saw the real test split; return warnings.

    Every model on the set's lineage counts: the generator and each model it was refined from
    (their manifests record ``train_splits`` and the sha256 of the dataset manifests they
    trained on). A model that trained on ``test`` is refused. A chain that never trained on
    this dataset, or that also trained on another one, is refused too, unless the user says the
    datasets are independent (``independent_model``), because then nothing proves the test
    images were unseen.
    """
    where = f"{synth.root}"
    lin = synth.lineage
    if not lin.models:
        if not independent_model:
            raise MedsynthError(
                f"{where}: its manifest names no readable model folder (stage train), so "
                "evaluate cannot check that the generator never saw the test split",
                hint="pass --independent-model if the generator's training data is disjoint "
                     "from the real test split",
            )
        return [f"{synth.name}: generator's model manifest not found; leakage not checked"]
    gen = lin.models[0]
    warnings = [f"{synth.name}: {p}" for p in lin.problems]
    for m in lin.models:
        splits = _splits(m)
        if "test" in splits:
            via = "" if m is gen else f" (refined into {gen.folder})"
            raise MedsynthError(
                f"{where}: its generator {m.folder}{via} trained on the test split "
                f"(train_splits={splits}); evaluating on that split would leak",
                hint="train the generator with --splits train (or train,val)",
            )
    data_sha = lin.data_sha256()
    foreign = sorted({str(ref.get("path")) for _, ref in lin.data
                      if ref.get("sha256") and ref.get("sha256") != real.sha256})
    if real.sha256 not in data_sha or foreign:
        if not independent_model:
            what = (f"was trained on another dataset than {real.root}" if real.sha256 not in data_sha
                    else f"was also trained on another dataset ({', '.join(foreign)})")
            raise MedsynthError(
                f"{where}: its generator {gen.folder} {what} (dataset manifest sha256 differs), "
                "so its test split may overlap the generator's training images",
                hint="evaluate against the dataset the generator trained on, or pass "
                     "--independent-model if the two datasets share no images",
            )
        warnings.append(f"{synth.name}: generator trained on another dataset (--independent-model)")
    warnings += _check_image_sources(synth, real)
    # Only a val split of this dataset is the one early stopping uses (a prior trained on its
    # own public set's val split is not).
    if any("val" in _splits(m) and real.sha256 in lin.data_sha256(m) for m in lin.models):
        warnings.append(f"{synth.name}: generator also trained on the val split used for "
                        "early stopping")
    return warnings


def _check_image_sources(synth: SyntheticSet, real: Dataset) -> list[str]:
    """Refuse a set made from the real test images (``generate --init-images/--twin``).

    Image-to-image samples keep their source's layout and a twin its real image's description:
    a set started from the test split would be tested on what it was made from.
    """
    warnings = []
    strength = synth.manifest.outputs.get("init_images", {}).get("strength")
    for ref in synth.manifest.inputs:
        role = ref.get("role")
        if role not in ("init-images", "twin") or (role == "init-images" and strength is not None
                                                    and float(strength) >= 1.0):
            continue
        if not ref.get("sha256"):
            warnings.append(f"{synth.name}: made from the images of the folder {ref.get('path')}; "
                            "evaluate cannot check that none of them is a test image")
        elif ref["sha256"] == real.sha256 and "test" in (ref.get("splits") or []):
            raise MedsynthError(
                f"{synth.root}: made from the test split of {real.root} (generate --{role} "
                f"--split {','.join(ref.get('splits') or [])}); evaluating on that split would leak",
                hint="generate from the train split (--split train)")
    return warnings


def check_compatible(synth: SyntheticSet, real: Dataset) -> None:
    """Classes and channels of a synthetic set must match the real dataset."""
    unknown = sorted(set(synth.classes) - set(real.classes))
    if unknown:
        raise MedsynthError(f"{synth.root}: class(es) {unknown} are not classes of {real.root} "
                            f"({real.classes})")
    dims = synth.manifest.outputs.get("spatial_dims")
    real_dims = int(real.manifest.outputs.get("spatial_dims", 2))
    if dims is not None and int(dims) != real_dims:
        raise MedsynthError(f"{synth.root}: {dims}D images, but {real.root} has {real_dims}D ones")
    ch = synth.manifest.outputs.get("channels")
    if ch is not None and int(ch) != real.channels:
        raise MedsynthError(f"{synth.root}: {ch}-channel images, but {real.root} has "
                            f"{real.channels} channel(s)")


def check_real(real: Dataset) -> None:
    """The real dataset needs 2D images or 3D volumes and non-empty train and test splits."""
    if int(real.manifest.outputs.get("spatial_dims", 2)) not in (2, 3):
        raise MedsynthError(f"{real.root}: evaluate supports 2D images and 3D volumes")
    for split in ("train", "test"):
        if real.split(split).empty:
            raise MedsynthError(f"{real.root}: the {split!r} split is empty; evaluate needs "
                                "real train and test images")


def split_leaks(real: Dataset) -> list[str]:
    """Warnings when labels.csv puts one duplicate group or one split group (patient, series,
    volume) in train/val and test: the benchmark then partly measures memory."""
    from medsynth.imaging.duplicates import leak_example

    out = []
    for col, what in (("dup_group", "duplicate group(s) (the same or nearly the same image)"),
                      ("split_group", "split group(s) (patient, study, series or volume)")):
        leak = leak_example(real.table, col)
        if leak:
            out.append(f"{real.root}: {leak[0]} {what} have images in train/val and in test "
                       f"({col} in labels.csv), e.g. {leak[1]}: test scores partly measure "
                       "memory; re-import with medsynth data import --dedup (duplicates) or "
                       "without the source's split (groups)")
    return out


def load_real(real: Dataset, split: str, size: int, classes: list[str]) -> ImageSet:
    """All images of one split of the real dataset, labels indexed by ``classes``."""
    from medsynth.ui import track

    rows = real.split(split)
    rows = rows[rows["class"].isin(classes)]
    arrays = [real.load(row).array for _, row in track(list(rows.iterrows()),
                                                       f"loading real {split}")]
    return _image_set(f"real-{split}", arrays, rows["class"].tolist(), rows["image_id"].tolist(),
                      size, classes)


def load_synthetic(synth: SyntheticSet, size: int, classes: list[str],
                   max_per_class: int | None = None) -> ImageSet:
    """The images of a synthetic set (at most ``max_per_class`` per class, in samples.csv order)."""
    table, arrays = synthetic_arrays(synth, max_per_class, lambda img: img.array)
    return _image_set(synth.name, arrays, table["class"].tolist(),
                      table["sample_id"].astype(str).tolist(), size, classes)


def synthetic_arrays(synth: SyntheticSet, max_per_class: int | None,
                     convert: Callable[[Image], np.ndarray], *, folders: bool = False
                     ) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The rows of samples.csv to load (at most ``max_per_class`` per class, in order) and
    ``convert(image)`` of each file read (a missing one: one line naming it); ``folders``: a
    listed path may be a folder (a DICOM series)."""
    from medsynth.ui import track

    table = synth.table
    if max_per_class is not None:
        table = table.groupby("class", sort=False).head(max_per_class)
    arrays = []
    for _, row in track(list(table.iterrows()), f"loading {synth.name}"):
        p = synth.path_of(row)
        if not (p.exists() if folders else p.is_file()):
            raise MedsynthError(f"{p}: listed in {synth.root / SAMPLES_CSV} but missing")
        arrays.append(convert(read_image(p)))
    return table, arrays


def _image_set(name: str, arrays: list[np.ndarray], labels: list[str], ids: list[str],
               size: int, classes: list[str]) -> ImageSet:
    import torch

    for a in arrays:
        if a.ndim != 3:
            raise MedsynthError(f"{name}: evaluate needs 2D images, got shape {a.shape}")
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in labels], dtype=torch.long)
    return ImageSet(name, stack_images(arrays, size), y, [str(i) for i in ids])


def open_inputs(real_path: Path, synth_paths: list[Path], independent_model: bool
                ) -> tuple[Dataset, list[SyntheticSet], list[str]]:
    """Open and cross-check everything; returns the dataset, the synthetic sets and warnings."""
    real = open_dataset(real_path)
    check_real(real)
    synths, warnings = [], split_leaks(real)
    names: set[str] = set()
    for p in synth_paths:
        s = open_synthetic(p)
        check_compatible(s, real)
        warnings += check_leakage(s, real, independent_model=independent_model)
        base, k = s.name, 2
        while s.name in names:  # two sets in folders of the same name
            s.name = f"{base}-{k}"
            k += 1
        names.add(s.name)
        synths.append(s)
    return real, synths, warnings


def default_size(real: Dataset) -> int:
    """The data's own image size, at most 64 px (a quick CPU benchmark); volumes at most 32
    voxels a side."""
    first = real.load(real.split("train").iloc[0])
    if first.array.ndim == 4:
        return int(min(max(first.array.shape[-3:]), 32))
    return measure_size(first.array.shape)
