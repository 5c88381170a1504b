"""Tiny datasets and stores for train/models tests, made on the spot with the shared writers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth.artifacts import input_ref, now_iso, write_manifest
from medsynth.imaging.dataset import Dataset, finish_dataset
from medsynth.imaging.save import save_png
from medsynth.store import DescriptionRecord, record_writer

COLORS = {"red": ["dark red", "crimson"], "blue": ["navy blue", "sky blue"]}
SHAPES = {"red": ["round", "oval"], "blue": ["square", "rectangular"]}


def make_dataset(root: Path, *, n_per_class: int = 6, size: int = 16, channels: int = 3,
                 dtype: str = "uint8", modality: str = "XC", classes: tuple[str, ...] = ("red", "blue"),
                 seed: int = 0) -> Dataset:
    """Classes differ by colour (RGB) or brightness (gray); 2/3 train, 1/3 test."""
    rng = np.random.default_rng(seed)
    rows = []
    hi = 255 if dtype == "uint8" else 4095
    for ci, cls in enumerate(classes):
        for i in range(n_per_class):
            a = rng.integers(0, hi // 8, (channels, size, size)).astype(dtype)
            s = size // 4
            if channels == 3:
                a[ci % 3, s:3 * s, s:3 * s] = hi * 3 // 4
            else:
                a[0, s:3 * s, s:3 * s] = hi * (ci + 1) // (len(classes) + 1)
            rel = f"images/{cls}/{cls}_{i}.png"
            save_png(a, root / rel)
            rows.append({"image_id": f"{cls}_{i}", "path": rel, "class": cls,
                         "split": "test" if i % 3 == 2 else "train"})
    return finish_dataset(root, pd.DataFrame(rows), config={"tiny": True}, classes=list(classes),
                          channels=channels, dtype=dtype, modality=modality)


def make_store(root: Path, dataset: Dataset, *, seed: int = 0, skip: int = 0) -> Path:
    """A describe-stage store with a templated description for every image (but ``skip`` per class)."""
    rng = np.random.default_rng(seed)
    for cls, grp in dataset.table.groupby("class"):
        with record_writer(root, str(cls)) as w:
            for j, (_, r) in enumerate(grp.iterrows()):
                if j < skip:
                    continue
                colour = COLORS.get(str(cls), ["gray", "green"])[int(rng.integers(2))]
                shape = SHAPES.get(str(cls), ["irregular", "flat"])[int(rng.integers(2))]
                attrs = {"colour": colour, "shape": shape}
                w.write(DescriptionRecord(
                    image_id=str(r["image_id"]), path=str(r["path"]), cls=str(cls),
                    split=str(r["split"]), attributes=attrs,
                    text=f"a {shape} {colour} lesion on a dark background",
                    backend="template", model="none", template_version="1",
                    timestamp=now_iso()).to_dict())
    write_manifest(root, "describe", config={}, inputs=[input_ref(dataset.root, "data")],
                   outputs={"classes": dataset.classes})
    return root


def log_rows(folder: Path) -> list[dict[str, str]]:
    """The rows of a model folder's (or run's) train_log.csv."""
    with open(folder / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))
