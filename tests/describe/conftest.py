"""Fixtures for the describe tests: a tiny labelled derm dataset and a scripted chat server
(:mod:`tests.scripted_openai`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from medsynth.imaging.dataset import finish_dataset
from medsynth.imaging.save import save_png
from medsynth.pixel_attributes.derm import COLOR_RGB
from tests.pixel_attributes.shapes import lesion
from tests.scripted_openai import VALID, Scripted, serve

__all__ = ["VALID", "Scripted", "make_derm_dataset"]

CLASSES = ("melanoma", "nevus")


def make_derm_dataset(root: Path, n_per_class: int = 4, size: int = 48) -> Path:
    """A dataset folder of synthetic lesions with known diameter and colour in labels.csv."""
    rows = []
    for ci, cls in enumerate(CLASSES):
        for i in range(n_per_class):
            a = size * (0.18 + 0.03 * i)
            color = "dark_brown" if ci == 0 else "light_brown"
            arr = lesion(size, a, a * 0.7, color=COLOR_RGB[color], seed=ci * 100 + i)
            rel = f"images/{cls}/{cls}_{i}.png"
            save_png(arr, root / rel)
            rows.append({"image_id": f"{cls}_{i}", "path": rel, "class": cls,
                         "split": "test" if i == 0 else "train",
                         "diameter_mm": round(2 * a * 20 / size, 3), "colors": color})
    table = pd.DataFrame(rows)
    finish_dataset(root, table, config={"test": True}, classes=list(CLASSES), channels=3,
                   dtype="uint8", modality="XC", extra={"mm_per_px": 20 / size, "size": size})
    return root


@pytest.fixture
def derm_dataset(tmp_path: Path) -> Path:
    return make_derm_dataset(tmp_path / "derm")


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    with serve() as state:
        yield state
