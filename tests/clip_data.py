"""A tiny separable (image, description) set for the CLIP tests: shapes whose text says their
shape, colour and size, saved as a real dataset folder and a real description store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medsynth.artifacts import input_ref, write_manifest
from medsynth.imaging.dataset import finish_dataset, open_dataset
from medsynth.imaging.save import save_png
from medsynth.store import record_writer

CLASSES = ["disc", "square"]
COLORS = {"red": (220, 40, 40), "blue": (40, 60, 230)}


def shape(cls: str, color: str, large: bool, rng: np.random.Generator, size: int) -> np.ndarray:
    """(3, size, size) uint8: a red or blue disc or square, small or large, on grey noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = rng.normal(100, 10, (size, size, 3))
    r = (0.36 if large else 0.16) * size
    cx, cy = rng.uniform(0.42, 0.58, 2) * size
    m = np.hypot(xx - cx, yy - cy) < r if cls == "disc" else \
        (abs(xx - cx) < r * 0.9) & (abs(yy - cy) < r * 0.9)
    img[m] = np.asarray(COLORS[color]) + rng.normal(0, 8, (int(m.sum()), 3))
    return np.moveaxis(np.clip(img, 0, 255).astype(np.uint8), -1, 0)


def make_clip_data(root: Path, n_per_class: int = 24, size: int = 16, seed: int = 0,
                   test_texts: bool = True) -> tuple[Path, Path]:
    """Dataset (splits train/val/test = 60/15/25 %) and a store describing every image
    (the test split too when ``test_texts``). Returns (dataset, store)."""
    rng = np.random.default_rng(seed)
    rows, texts = [], {}
    for cls in CLASSES:
        n = n_per_class
        splits = ["train"] * int(0.6 * n) + ["val"] * int(0.15 * n)
        splits += ["test"] * (n - len(splits))
        for i in range(n):
            color = ("red", "blue")[i % 2]
            large = (i // 2) % 2 == 0
            iid = f"{cls}_{i:03d}"
            rel = f"images/{cls}/{iid}.png"
            save_png(shape(cls, color, large, rng, size), root / "data" / rel)
            rows.append({"image_id": iid, "path": rel, "class": cls, "split": splits[i]})
            texts[iid] = f"a {'large' if large else 'small'} {color} {cls}"
    table = pd.DataFrame(rows)
    data = root / "data"
    finish_dataset(data, table, config={"fixture": "clip shapes"}, classes=CLASSES, channels=3,
                   dtype="uint8", modality="XC")
    store = root / "store"
    ds = open_dataset(data)
    for cls in CLASSES:
        w = record_writer(store, cls)
        for _, r in ds.table[ds.table["class"] == cls].iterrows():
            if r["split"] == "test" and not test_texts:
                continue
            w.write({"image_id": r["image_id"], "path": r["path"], "class": cls,
                     "split": r["split"], "attributes": {}, "text": texts[r["image_id"]],
                     "backend": "fixture", "model": "fixture", "template_version": "1",
                     "timestamp": "2026-01-01T00:00:00Z", "status": "ok"})
        w.close()
    write_manifest(store, "describe", config={"split": "all" if test_texts else "train,val"},
                   inputs=[input_ref(data, "data")], outputs={})
    return data, store


def make_clip_volumes(root: Path, n_per_class: int = 8, size: int = 12) -> tuple[Path, Path]:
    """A 3D dataset (NIfTI, one channel, MR): bright balls and cubes, small or large, with a
    store describing each. Returns (dataset, store)."""
    from medsynth.imaging.save import save_nifti

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[0:size, 0:size, 0:size]
    c = (size - 1) / 2
    rows, texts = [], {}
    for cls in ("ball", "cube"):
        for i in range(n_per_class):
            large = i % 2 == 0
            r = (0.4 if large else 0.2) * size
            m = np.sqrt((zz - c) ** 2 + (yy - c) ** 2 + (xx - c) ** 2) < r if cls == "ball" \
                else (abs(zz - c) < r) & (abs(yy - c) < r) & (abs(xx - c) < r)
            vol = rng.normal(40, 5, (size,) * 3)
            vol[m] = 200
            iid = f"{cls}_{i:03d}"
            rel = f"images/{cls}/{iid}.nii.gz"
            save_nifti(np.clip(vol, 0, 255).astype(np.uint8)[None], root / "data" / rel)
            split = "train" if i < n_per_class - 2 else "test"
            rows.append({"image_id": iid, "path": rel, "class": cls, "split": split})
            texts[iid] = f"a {'large' if large else 'small'} {cls}"
    data = root / "data"
    finish_dataset(data, pd.DataFrame(rows), config={"fixture": "clip volumes"},
                   classes=["ball", "cube"], channels=1, dtype="uint8", modality="MR",
                   spatial_dims=3)
    store = root / "store"
    for cls in ("ball", "cube"):
        w = record_writer(store, cls)
        for r in rows:
            if r["class"] == cls:
                w.write({**{k: r[k] for k in ("image_id", "path", "class", "split")},
                         "attributes": {}, "text": texts[r["image_id"]], "backend": "fixture",
                         "model": "fixture", "template_version": "1",
                         "timestamp": "2026-01-01T00:00:00Z", "status": "ok"})
        w.close()
    write_manifest(store, "describe", config={}, inputs=[input_ref(data, "data")], outputs={})
    return data, store
