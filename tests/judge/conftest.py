"""Synthetic sets of demo phantom images (the generate contract: manifest + samples.csv + png/),
a model manifest and a dataset manifest above them, so the judge reads them like real sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.artifacts import input_ref, write_manifest
from medsynth.imaging.save import save_png
from medsynth.synthset import write_samples

DERM_SIZE = 64
CXR_SIZE = 128


def phantom(demo: str, cls: str, index: int, size: int, seed: int = 7):
    from medsynth.data.demo import cxr, derm

    mod = derm if demo == "derm" else cxr
    return mod.render(cls, index, size, seed)


def make_phantom_set(root: Path, demo: str, n_per_class: int = 2, *, classes=None,
                     size: int | None = None, seed: int = 7, oversample: int = 1) -> Path:
    """A real demo dataset (root/data, 5 images per class) -> a train manifest on its train
    split (root/model) -> a synthetic set of other phantoms of the same kind (root/synth)."""
    from medsynth.data.demo import cxr, derm
    from medsynth.data.demo.common import DemoConfig, write_demo

    mod = derm if demo == "derm" else cxr
    size = size or (DERM_SIZE if demo == "derm" else CXR_SIZE)
    all_classes = list(mod.CLASSES)
    data = root / "data"
    if not (data / "medsynth.json").is_file():
        write_demo(DemoConfig(demo=demo, out=str(data), n_per_class=5, size=size, seed=seed + 1,
                              workers=1))
    model = root / "model"
    if not (model / "medsynth.json").is_file():
        from medsynth.imaging.dataset import open_dataset

        model.mkdir(exist_ok=True)
        write_manifest(model, "train", config={"train_splits": ["train"],
                                               "dataset_sha256": open_dataset(data).sha256},
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
                         "index": i, "description": "", "request": i // oversample,
                         "oversample": oversample})
    write_samples(synth, rows)
    # n in the config as in a real generate manifest: two sets written within one second must
    # still differ (the manifest's sha256 is what readers compare)
    write_manifest(synth, "generate", config={"fixture": demo, "n_per_class": n_per_class}, inputs=[input_ref(model, "train")],
                   outputs={"samples": "samples.csv", "synthetic": True, "size": size,
                            "classes": classes or all_classes, "formats": ["png"],
                            "channels": 3 if demo == "derm" else 1})
    return synth


@pytest.fixture(scope="session")
def derm_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom_set(tmp_path_factory.mktemp("derm"), "derm", 3)


@pytest.fixture(scope="session")
def cxr_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom_set(tmp_path_factory.mktemp("cxr"), "cxr", 2)
