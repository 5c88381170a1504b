"""generate --twin on a set whose test split holds copies of the training images (issue 26 item
2): the near-copy reference leaves the copies out instead of collapsing to 0, and says "no
reference" when nothing is left."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth.imaging.dataset import finish_dataset
from medsynth.imaging.save import save_png
from tests.generate.test_run import generate


def _dataset(root: Path, n_distinct_test: int, n_copies: int = 4) -> Path:
    """normal/pneumonia, 4 and 3 train images; test = a copy of the first ``n_copies`` train
    images of each class (other files, the same pixels) plus ``n_distinct_test`` new images
    per class."""
    rng = np.random.default_rng(5)
    rows = []
    for cls, n in (("normal", 4), ("pneumonia", 3)):
        for i in range(n):
            arr = rng.integers(0, 4095, (1, 16, 16)).astype("uint16")
            for split, name in (("train", f"train{i}"), ("test", f"copy{i}"))[:2 if i < n_copies
                                                                                else 1]:
                save_png(arr, root / "images" / cls / f"{name}.png")
                rows.append({"image_id": f"{cls}_{name}", "path": f"images/{cls}/{name}.png",
                             "class": cls, "split": split})
        for i in range(n_distinct_test):
            save_png(rng.integers(0, 4095, (1, 16, 16)).astype("uint16"),
                     root / "images" / cls / f"test{i}.png")
            rows.append({"image_id": f"{cls}_test{i}", "path": f"images/{cls}/test{i}.png",
                         "class": cls, "split": "test"})
    finish_dataset(root, pd.DataFrame(rows), config={"test": True}, classes=["normal", "pneumonia"],
                   channels=1, dtype="uint16", modality="DX")
    return root


LOW = ["--strength", "0.04", "--sampler", "ddim", "--steps", "25", "--guidance", "1"]


def test_low_strength_twins_are_flagged_despite_test_copies(gray16_model: Path,
                                                            tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds", n_distinct_test=4)
    out = tmp_path / "twin"
    r = generate(gray16_model, "--twin", ds, "--out", out, *LOW)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "7 of 15 real test image(s) are exact copies" in text
    priv = json.loads((out / "medsynth.json").read_text())["outputs"]["twin"]["privacy"]
    assert priv["reference"]["with_copy"] == 7 and priv["reference"]["kept"] == 15
    for space in ("feature", "pixel"):
        assert priv[space]["threshold"] > 0  # the copies (distance 0) no longer set it
    # a twin made from 1 of 25 steps is its source: every one a near-copy (before: 0.000)
    assert priv["pixel"]["near_copy_share"] == 1.0
    assert priv["nearest_is_own"]["pixel"] == 1.0


def test_no_reference_when_too_few_test_images_are_not_copies(gray16_model: Path,
                                                               tmp_path: Path) -> None:
    """4 test images, copies of training images: each still has other training images to
    compare to, but 4 cannot calibrate a 1 % quantile: no reference, no share."""
    ds = _dataset(tmp_path / "ds", n_distinct_test=0, n_copies=2)
    out = tmp_path / "twin"
    r = generate(gray16_model, "--twin", ds, "--out", out, *LOW)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "no reference" in text and "near-copy share 0" not in text
    priv = json.loads((out / "medsynth.json").read_text())["outputs"]["twin"]["privacy"]
    for space in ("feature", "pixel"):
        assert priv[space]["threshold"] is None and priv[space]["near_copy_share"] is None
        assert "4 held-out real image(s)" in priv[space]["no_reference"]
        assert "at least 5 needed" in priv[space]["no_reference"]
    rows = pd.read_csv(out / "privacy.csv", keep_default_na=False)
    assert (rows["near_copy_pixel"] == "").all()  # no flag without a reference
    shutil.rmtree(out)
