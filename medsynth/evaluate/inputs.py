"""Open the real dataset and the synthetic sets, check they fit together, refuse leakage.

Images become float tensors in [0, 1] of one common size, channel-first, with the data's own
channel count (grayscale stays one channel; only the feature extractor makes 3 channels).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsynth.artifacts import Manifest, read_manifest
from medsynth.data.dataset import Dataset, open_dataset
from medsynth.data.readers import read_image
from medsynth.errors import MedsynthError

SAMPLES_CSV = "samples.csv"
IMAGE_COLUMNS = ("png", "nifti", "dicom")
"""samples.csv columns holding an image path, in the order evaluate prefers them."""


def to_unit(array: np.ndarray) -> np.ndarray:
    """Channel-first pixels -> float32 in [0, 1] by the dtype's range (floats: min-max)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    a = array.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def stack_images(arrays: list[np.ndarray], size: int) -> Any:
    """List of (C, H, W) arrays -> float tensor (N, C, size, size) in [0, 1] (antialiased resize)."""
    import torch
    import torch.nn.functional as F

    if not arrays:
        return torch.zeros(0, 1, size, size)
    out = []
    for a in arrays:
        t = torch.from_numpy(np.ascontiguousarray(to_unit(a)))[None]
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        out.append(t.clamp_(0, 1))
    return torch.cat(out)


@dataclasses.dataclass
class ImageSet:
    """Images of one source (a real split or a synthetic set), aligned with their labels."""

    name: str
    x: Any
    """Float tensor (N, C, S, S) in [0, 1]."""
    y: Any
    """Long tensor (N,) of class indices into the real dataset's class list."""
    ids: list[str]
    """image_id (real) or sample_id (synthetic) per image."""

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: Any, name: str | None = None) -> ImageSet:
        import torch

        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return ImageSet(name or self.name, self.x[idx], self.y[idx],
                        [self.ids[int(i)] for i in idx])

    def of_class(self, k: int) -> ImageSet:
        return self.subset(np.nonzero(self.y.numpy() == k)[0])


@dataclasses.dataclass
class SyntheticSet:
    """A ``generate`` output folder: manifest, samples.csv and the model it came from."""

    root: Path
    name: str
    manifest: Manifest
    table: pd.DataFrame
    model_manifest: Manifest | None
    image_column: str

    @property
    def classes(self) -> list[str]:
        return sorted(self.table["class"].astype(str).unique().tolist())

    def path_of(self, row: pd.Series) -> Path:
        return self.root / str(row[self.image_column])


def open_synthetic(path: str | Path) -> SyntheticSet:
    """Open a synthetic set through its ``medsynth.json`` (stage generate) and samples.csv."""
    root = Path(path)
    manifest = read_manifest(root, "generate")
    csv = root / str(manifest.outputs.get("samples", SAMPLES_CSV))
    if not csv.is_file():
        raise MedsynthError(f"{root}: no {csv.name} beside its manifest (incomplete synthetic set?)")
    try:
        table = pd.read_csv(csv, keep_default_na=False, na_values=[""], dtype={"sample_id": str})
    except Exception as e:
        raise MedsynthError(f"{csv}: cannot read ({e})") from e
    missing = [c for c in ("sample_id", "class") if c not in table.columns]
    if missing:
        raise MedsynthError(f"{csv}: missing columns {missing}")
    if table.empty:
        raise MedsynthError(f"{csv}: holds no samples")
    table["class"] = table["class"].astype(str)
    column = next((c for c in IMAGE_COLUMNS if c in table.columns
                   and table[c].notna().all() and (table[c].astype(str) != "").all()), None)
    if column is None:
        raise MedsynthError(f"{csv}: no image column ({', '.join(IMAGE_COLUMNS)}) filled for "
                            "every sample")
    model_manifest = None
    for ref in manifest.inputs:
        if ref.get("stage") == "train":
            model_dir = Path(str(ref.get("path", "")))
            if not model_dir.is_absolute():
                model_dir = (root / model_dir).resolve()
            if (model_dir / "medsynth.json").is_file():
                model_manifest = read_manifest(model_dir, "train")
    return SyntheticSet(root=root, name=root.resolve().name, manifest=manifest, table=table,
                        model_manifest=model_manifest, image_column=column)


def check_leakage(synth: SyntheticSet, real: Dataset, *, independent_model: bool) -> list[str]:
    """Refuse a synthetic set whose generator saw the real test split; return warnings.

    The generator's model manifest (stage train) records ``train_splits`` and the sha256 of the
    dataset manifest it trained on. A model that trained on ``test`` is refused. A model
    trained on another dataset is refused too, unless the user says the two are independent
    (``independent_model``), because then nothing proves the test images were unseen.
    """
    where = f"{synth.root}"
    mm = synth.model_manifest
    if mm is None:
        if not independent_model:
            raise MedsynthError(
                f"{where}: its manifest names no readable model folder (stage train), so "
                "evaluate cannot check that the generator never saw the test split",
                hint="pass --independent-model if the generator's training data is disjoint "
                     "from the real test split",
            )
        return [f"{synth.name}: generator's model manifest not found; leakage not checked"]
    splits = mm.config.get("train_splits") or mm.config.get("splits") or []
    if "test" in [str(s) for s in splits]:
        raise MedsynthError(
            f"{where}: its generator {mm.folder} trained on the test split "
            f"(train_splits={list(splits)}); evaluating on that split would leak",
            hint="train the generator with --splits train (or train,val)",
        )
    warnings = []
    data_sha = [str(r.get("sha256")) for r in mm.inputs if r.get("stage") == "data"]
    data_sha += [str(mm.config["dataset_sha256"])] if mm.config.get("dataset_sha256") else []
    if real.sha256 not in data_sha:
        if not independent_model:
            raise MedsynthError(
                f"{where}: its generator {mm.folder} was trained on another dataset than "
                f"{real.root} (dataset manifest sha256 differs), so its test split may "
                "overlap the generator's training images",
                hint="evaluate against the dataset the generator trained on, or pass "
                     "--independent-model if the two datasets share no images",
            )
        warnings.append(f"{synth.name}: generator trained on another dataset (--independent-model)")
    if "val" in [str(s) for s in splits]:
        warnings.append(f"{synth.name}: generator also trained on the val split used for "
                        "early stopping")
    return warnings


def check_compatible(synth: SyntheticSet, real: Dataset) -> None:
    """Classes and channels of a synthetic set must match the real dataset."""
    unknown = sorted(set(synth.classes) - set(real.classes))
    if unknown:
        raise MedsynthError(f"{synth.root}: class(es) {unknown} are not classes of {real.root} "
                            f"({real.classes})")
    ch = synth.manifest.outputs.get("channels")
    if ch is not None and int(ch) != real.channels:
        raise MedsynthError(f"{synth.root}: {ch}-channel images, but {real.root} has "
                            f"{real.channels} channel(s)")


def check_real(real: Dataset) -> None:
    """The real dataset needs 2D images and non-empty train and test splits."""
    if int(real.manifest.outputs.get("spatial_dims", 2)) != 2:
        raise MedsynthError(f"{real.root}: evaluate supports 2D datasets only (this one is 3D)")
    for split in ("train", "test"):
        if real.split(split).empty:
            raise MedsynthError(f"{real.root}: the {split!r} split is empty; evaluate needs "
                                "real train and test images")


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
    from medsynth.ui import track

    table = synth.table
    if max_per_class is not None:
        table = table.groupby("class", sort=False).head(max_per_class)
    arrays = []
    for _, row in track(list(table.iterrows()), f"loading {synth.name}"):
        p = synth.path_of(row)
        if not p.is_file():
            raise MedsynthError(f"{p}: listed in {synth.root / SAMPLES_CSV} but missing")
        arrays.append(read_image(p).array)
    return _image_set(synth.name, arrays, table["class"].tolist(),
                      table["sample_id"].astype(str).tolist(), size, classes)


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
    synths, warnings = [], []
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
    """The data's own image size, at most 64 px (a quick CPU benchmark)."""
    first = real.load(real.split("train").iloc[0])
    return int(min(max(first.array.shape[-2:]), 64))
