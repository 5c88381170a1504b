"""A medsynth dataset folder: images, ``labels.csv`` and a ``medsynth.json`` of stage ``data``.

``labels.csv`` columns: ``image_id, path`` (relative to the folder), ``class, split`` and any
ground-truth attribute columns. Every later stage opens its input with :func:`open_dataset`.
"""

from __future__ import annotations

import dataclasses
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsynth.artifacts import Manifest, atomic_write_bytes, read_manifest, write_manifest
from medsynth.errors import MedsynthError
from medsynth.imaging.image import Image
from medsynth.imaging.readers import read_image

CORE_COLUMNS = ("image_id", "path", "class", "split")
META_COLUMNS = ("source", "modality", "spacing", "affine", "dup_group", "split_group")
"""Per-image facts that are not ground-truth attributes: where the image came from, its
modality (mixed sets), the geometry a PNG file cannot hold (spacing in mm in array axis
order, the 4x4 RAS affine row by row), as comma-separated numbers, its duplicate group and
its split group (medsynth/imaging/duplicates.py)."""
LABELS_NAME = "labels.csv"


@dataclasses.dataclass
class Dataset:
    root: Path
    table: pd.DataFrame
    manifest: Manifest

    @property
    def classes(self) -> list[str]:
        listed = self.manifest.outputs.get("classes")
        return list(listed) if listed else sorted(self.table["class"].unique().tolist())

    @property
    def attribute_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in CORE_COLUMNS and c not in META_COLUMNS]

    @property
    def channels(self) -> int:
        return int(self.manifest.outputs.get("channels", 1))

    @property
    def modality(self) -> str:
        return str(self.manifest.outputs.get("modality", "OT"))

    @property
    def dtype(self) -> str:
        return str(self.manifest.outputs.get("dtype", "uint8"))

    @property
    def sha256(self) -> str:
        return str(self.manifest.sha256)

    def split(self, name: str | None) -> pd.DataFrame:
        return self.table if name is None else self.table[self.table["split"] == name]

    def path_of(self, row: pd.Series | int) -> Path:
        if isinstance(row, (int, np.integer)):
            row = self.table.iloc[int(row)]
        return self.root / str(row["path"])

    def load(self, row: pd.Series | int) -> Image:
        """The image of ``row``, with the modality and geometry recorded for it at import."""
        if isinstance(row, (int, np.integer)):
            row = self.table.iloc[int(row)]
        img = read_image(self.path_of(row))
        modality = _cell(row, "modality")
        img.modality = modality or self.modality
        if "spacing" in row.index:
            # Written by data import: the column is the truth; empty = unknown, even where a
            # NIfTI header had to say 1 mm.
            spacing = _cell(row, "spacing")
            img.spacing = parse_numbers(spacing) if spacing else None
            if spacing is None:
                img.affine = None
        if img.affine is None and _cell(row, "affine"):
            img.affine = np.asarray(parse_numbers(str(row["affine"])), dtype=np.float64).reshape(4, 4)
        # Readers store values in their narrowest type (a float32 NIfTI of whole numbers reads
        # as integers); the dataset has one type, so widen back to it where that is exact.
        want = self.dtype
        have = str(img.array.dtype)
        if have != want and (want == "float32" and have in ("uint8", "uint16", "int16")
                             or want == "int16" and have == "uint8"):
            img.array = img.array.astype(want)
        return img


def _cell(row: pd.Series, column: str) -> str | None:
    value = row.get(column) if column in row.index else None
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    return str(value)


def format_numbers(values: object) -> str:
    """Spacing or affine as a compact comma-separated string for labels.csv."""
    return ",".join(f"{float(v):.9g}" for v in np.asarray(values, dtype=np.float64).reshape(-1))


def parse_numbers(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def open_dataset(path: str | Path) -> Dataset:
    """Open a dataset folder written by ``medsynth data import`` or ``medsynth data demo``."""
    root = Path(path)
    if not (root / LABELS_NAME).is_file():
        raise MedsynthError(
            f"{root}: not a medsynth dataset (no {LABELS_NAME})",
            hint=f"make one with: medsynth data import {root} --out DATASET",
        )
    manifest = read_manifest(root, "data")
    try:
        table = pd.read_csv(root / LABELS_NAME, keep_default_na=False, na_values=[""])
    except Exception as e:
        raise MedsynthError(f"{root / LABELS_NAME}: cannot read ({e})") from e
    missing = [c for c in CORE_COLUMNS if c not in table.columns]
    if missing:
        raise MedsynthError(f"{root / LABELS_NAME}: missing columns {missing}")
    table["class"] = table["class"].astype(str)
    table["image_id"] = table["image_id"].astype(str)
    return Dataset(root=root, table=table, manifest=manifest)


def assign_splits(
    classes: pd.Series, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0,
    units: list[int] | None = None,
) -> list[str]:
    """Stratified, seeded train/val/test split; each class gets at least one test image if it can.

    ``units``: per image a split unit (slices of one volume, one patient, duplicates: see
    medsynth/imaging/duplicates.py); every unit lands whole in one split. Without units (or with
    every image its own unit) the split is the image-level one of earlier releases.
    """
    if units is not None and len(set(units)) < len(units):
        return _assign_grouped(classes, fractions, seed, units)
    rng = np.random.default_rng(seed)
    out = [""] * len(classes)
    for _cls, idx in sorted(classes.groupby(classes).groups.items(), key=lambda kv: str(kv[0])):
        idx = np.array(sorted(classes.index.get_indexer(idx)))
        rng.shuffle(idx)
        n = len(idx)
        n_test = int(round(n * fractions[2])) if n >= 3 else 0
        n_val = int(round(n * fractions[1])) if n >= 5 else 0
        if n >= 3 and fractions[2] > 0:
            n_test = max(n_test, 1)
        for j, k in enumerate(idx):
            out[k] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return out


def _assign_grouped(classes: pd.Series, fractions: tuple[float, float, float], seed: int,
                    units: list[int]) -> list[str]:
    """The split by units: each unit counts for its most common class; per class, units are
    shuffled and go to test, then val, until each holds its share of the class's images; at
    least one unit stays in train, and a class of 3+ units gets one test unit."""
    rng = np.random.default_rng(seed)
    labels = [str(c) for c in classes]
    members: dict[int, list[int]] = {}
    for i, u in enumerate(units):
        members.setdefault(u, []).append(i)
    by_class: dict[str, list[int]] = {}
    for u, idx in sorted(members.items()):
        count = Counter(labels[i] for i in idx)
        cls = min(count, key=lambda c: (-count[c], c))  # the most common; ties by name
        by_class.setdefault(cls, []).append(u)
    out = ["train"] * len(labels)
    for cls in sorted(by_class):
        us = np.array(by_class[cls])
        rng.shuffle(us)
        n = sum(len(members[u]) for u in us)
        want = {"test": n * fractions[2] if len(us) >= 3 else 0,
                "val": n * fractions[1] if len(us) >= 5 else 0}
        free = [int(u) for u in us]
        for split in ("test", "val"):
            got = 0
            if want[split] > 0 and len(free) > 1:  # test: always one unit, the best-sized
                first = min(free, key=lambda u: abs(len(members[u]) - want[split]))
                if split == "test" or len(members[first]) / 2 <= want[split]:
                    free.remove(first)
                    got = _put(out, members[first], split)
            for u in list(free):  # then, in shuffled order, any unit that brings it closer
                if len(free) > 1 and got + len(members[u]) / 2 <= want[split]:
                    free.remove(u)
                    got += _put(out, members[u], split)
    return out


def _put(out: list[str], idx: list[int], split: str) -> int:
    for i in idx:
        out[i] = split
    return len(idx)


def summarize(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for (cls, split), n in table.groupby(["class", "split"]).size().items():
        counts.setdefault(str(cls), {})[str(split)] = int(n)
    return counts


def write_labels(root: Path, table: pd.DataFrame) -> None:
    cols = list(CORE_COLUMNS) + [c for c in table.columns if c not in CORE_COLUMNS]
    buf = io.StringIO()
    table[cols].to_csv(buf, index=False)
    atomic_write_bytes(root / LABELS_NAME, buf.getvalue().encode("utf-8"))


def finish_dataset(
    root: Path,
    table: pd.DataFrame,
    *,
    config: Any,
    classes: list[str] | None = None,
    channels: int,
    dtype: str,
    modality: str,
    spatial_dims: int = 2,
    inputs: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Dataset:
    """Write ``labels.csv``, the MONAI datalist and the manifest (last, so a folder with a
    manifest is complete)."""
    from medsynth.loaders import dataset_datalist

    write_labels(root, table)
    listed = classes or sorted(table["class"].astype(str).unique().tolist())
    loaders = dataset_datalist(root, table, listed)
    outputs = {
        "classes": classes or sorted(table["class"].astype(str).unique().tolist()),
        "counts": summarize(table),
        "n_images": int(len(table)),
        "channels": channels,
        "dtype": dtype,
        "modality": modality,
        "spatial_dims": spatial_dims,
        "labels": "labels.csv",
        "loaders": loaders,
        **(extra or {}),
    }
    write_manifest(root, "data", config=config, inputs=inputs, outputs=outputs)
    return open_dataset(root)
