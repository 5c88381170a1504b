"""Tiny real-looking inputs for evaluate: a shapes dataset, a model manifest, synthetic sets.

The synthetic sets follow the generate contract exactly (docs/artifacts.md: ``medsynth.json`` of
stage generate pointing at a stage-train model folder, ``samples.csv``, ``png/<class>/``); their
images are perturbed copies of real training images (test data: the evaluate code is real).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsynth.artifacts import atomic_write_bytes, input_ref, write_manifest
from medsynth.imaging.dataset import assign_splits, finish_dataset, open_dataset
from medsynth.imaging.save import save_png
from medsynth.synthset import SAMPLE_COLUMNS

CLASSES = ["disc", "ring", "square"]
SYNTH_COLUMNS = list(SAMPLE_COLUMNS)


def shape_image(cls: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """(3, size, size) uint8: a coloured disc, ring or square at a random place on noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = rng.normal(60, 12, (size, size, 3))
    r = rng.uniform(0.18, 0.3) * size
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    d = np.hypot(xx - cx, yy - cy)
    if cls == "disc":
        m, color = d < r, (210, 70, 60)
    elif cls == "ring":
        m, color = (d < r) & (d > 0.55 * r), (70, 200, 80)
    else:
        m, color = (abs(xx - cx) < r) & (abs(yy - cy) < r), (60, 90, 220)
    img[m] = np.asarray(color) + rng.normal(0, 10, (int(m.sum()), 3))
    return np.moveaxis(np.clip(img, 0, 255).astype(np.uint8), -1, 0)


def make_dataset(root: Path, n_per_class: int = 30, size: int = 32, seed: int = 0,
                 gray16: bool = False, name: str = "shapes",
                 counts: dict[str, int] | None = None) -> Path:
    """A medsynth dataset folder of shapes (RGB uint8, or 16-bit grayscale), stratified splits.
    ``name`` goes into the manifest's config: two sets of the same seed written within one
    second are otherwise byte-identical manifests (one dataset, by sha256). ``counts``: images
    per class where it differs from ``n_per_class`` (a small class)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls in CLASSES:
        for i in range((counts or {}).get(cls, n_per_class)):
            rel = f"images/{cls}/{cls}_{i:03d}.png"
            img = shape_image(cls, rng, size)
            if gray16:  # full 16-bit range, one channel
                img = (img.astype(np.float64).mean(0, keepdims=True) * 257).astype(np.uint16)
            save_png(img, root / rel)
            rows.append({"image_id": f"{cls}_{i:03d}", "path": rel, "class": cls})
    table = pd.DataFrame(rows)
    table["split"] = assign_splits(table["class"], (0.6, 0.15, 0.25), seed=seed)
    finish_dataset(root, table, config={"fixture": name}, classes=CLASSES,
                   channels=1 if gray16 else 3, dtype="uint16" if gray16 else "uint8",
                   modality="DX" if gray16 else "XC")
    return root


def make_model(root: Path, dataset: Path, train_splits: list[str] | None = None) -> Path:
    """A stage-train model folder manifest (only what evaluate reads: config and inputs)."""
    root.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(dataset)
    write_manifest(root, "train",
                   config={"train_splits": train_splits or ["train"], "dataset_sha256": ds.sha256},
                   inputs=[input_ref(dataset, "data")],
                   outputs={"classes": ds.classes, "channels": ds.channels})
    return root


def make_synthetic(root: Path, dataset: Path, model: Path, *, mode: str = "perturbed",
                   n_per_class: int = 12, seed: int = 1) -> Path:
    """A generate-contract synthetic set from real training images.

    ``perturbed``: shifted, noisier copies (plausible, not copies); ``copies``: exact copies
    (a memorising generator); ``noise``: uniform noise (a broken generator).
    """
    rng = np.random.default_rng(seed)
    ds = open_dataset(dataset)
    train = ds.split("train")
    rows = []
    for k, cls in enumerate(ds.classes):
        src = train[train["class"] == cls]
        for i in range(n_per_class):
            row = src.iloc[i % len(src)]
            a = ds.load(row).array
            top = int(np.iinfo(a.dtype).max)
            if mode == "perturbed":
                shifted = np.roll(a, tuple(rng.integers(-4, 5, 2)), axis=(1, 2)).astype(float)
                noise = rng.normal(0, 14 * top / 255, a.shape)
                a = np.clip(shifted + noise, 0, top).astype(a.dtype)
            elif mode == "noise":
                a = rng.integers(0, top + 1, a.shape).astype(a.dtype)
            sid = f"{cls}-{i:06d}"
            rel = f"png/{cls}/{sid}.png"
            save_png(a, root / rel)
            rows.append({"sample_id": sid, "class": cls, "png": rel, "dicom": "", "nifti": "",
                         "report": f"reports/{cls}/{sid}.txt",
                         "description": f"a {cls} lesion", "seed": 1000 + i,
                         "sampler": "dpmsolver++", "steps": 5, "guidance": 3.0,
                         "model_sha256": "0" * 64, "medsynth_version": "0.1.0",
                         "class_id": k, "index": i,
                         "description_source": f"store:{row['image_id']}"})
    table = pd.DataFrame(rows, columns=SYNTH_COLUMNS)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic_write_bytes(root / "samples.csv", buf.getvalue().encode("utf-8"))
    write_manifest(root, "generate", config={"fixture": mode}, inputs=[input_ref(model, "train")],
                   outputs={"n_images": len(table), "classes": ds.classes,
                            "channels": ds.channels,
                            "dtype": ds.dtype, "samples": "samples.csv", "formats": ["png"],
                            "synthetic": True})
    return root


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Dataset, extra real images, an honest model, perturbed / copied / noise synthetic sets."""
    base = tmp_path_factory.mktemp("evaluate_inputs")
    data = make_dataset(base / "data")
    model = make_model(base / "model", data)
    return {
        "data": data, "model": model,
        "extra": make_dataset(base / "extra", n_per_class=15, seed=7),
        "synth": make_synthetic(base / "synth", data, model, mode="perturbed"),
        "copies": make_synthetic(base / "copies", data, model, mode="copies"),
        "noise": make_synthetic(base / "noise", data, model, mode="noise"),
    }
