"""Synthetic sets of demo phantom images (the generate contract: manifest + samples.csv + png/),
a model manifest and a dataset manifest above them, so the judge reads them like real sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.artifacts import input_ref, write_manifest
from medsynth.data.save import save_png
from medsynth.synthset import write_samples

DERM_SIZE = 64
CXR_SIZE = 128


def phantom(demo: str, cls: str, index: int, size: int, seed: int = 7):
    from medsynth.data.demo import cxr, derm

    mod = derm if demo == "derm" else cxr
    return mod.render(cls, index, size, seed)


def make_phantom_set(root: Path, demo: str, n_per_class: int = 2, *, classes=None,
                     size: int | None = None, seed: int = 7) -> Path:
    """data manifest (demo: mm_per_px, size) -> train manifest -> synthetic set of phantoms."""
    from medsynth.data.demo import cxr, derm

    mod = derm if demo == "derm" else cxr
    size = size or (DERM_SIZE if demo == "derm" else CXR_SIZE)
    fov = 20.0 if demo == "derm" else 430.0
    all_classes = list(mod.CLASSES)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_manifest(data, "data", outputs={"classes": all_classes, "mm_per_px": fov / size,
                                          "size": size, "phantom": True, "demo": demo})
    model = root / "model"
    model.mkdir(exist_ok=True)
    write_manifest(model, "train", config={"train_splits": ["train"]},
                   inputs=[input_ref(data, "data")], outputs={"classes": all_classes})
    synth = root / "synth"
    rows = []
    for k, cls in enumerate(classes or all_classes):
        for i in range(n_per_class):
            arr, _ = phantom(demo, cls, i, size, seed)
            sid = f"{cls}-{i:06d}"
            rel = f"png/{cls}/{sid}.png"
            save_png(arr, synth / rel)
            rows.append({"sample_id": sid, "class": cls, "png": rel, "seed": i, "class_id": k,
                         "index": i, "description": ""})
    write_samples(synth, rows)
    write_manifest(synth, "generate", config={"fixture": demo}, inputs=[input_ref(model, "train")],
                   outputs={"samples": "samples.csv", "synthetic": True, "size": size,
                            "classes": classes or all_classes, "formats": ["png"]})
    return synth


@pytest.fixture(scope="session")
def derm_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom_set(tmp_path_factory.mktemp("derm"), "derm", 3)


@pytest.fixture(scope="session")
def cxr_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom_set(tmp_path_factory.mktemp("cxr"), "cxr", 2)
