"""A class too small to reach the test split: one note, no torchmetrics UserWarning per run."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.evaluate.benchmark import classification_metrics
from tests.evaluate.conftest import make_dataset, make_model, make_synthetic

NOTE = "class square has no test images"


def test_auroc_of_present_classes_without_warnings() -> None:
    from torchmetrics.functional.classification import multiclass_auroc

    rng = np.random.default_rng(0)
    y = torch.as_tensor(rng.integers(0, 2, 40))  # class 2 absent
    probs = torch.softmax(torch.as_tensor(rng.normal(size=(40, 3))).float(), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(probs, y, 3)
    auroc = m["per_class"]["auroc"]
    assert np.isnan(auroc[2]) and np.isnan(m["per_class"]["recall"][2])
    with warnings.catch_warnings():  # the reference call is the one that warns
        warnings.simplefilter("ignore")
        ref = multiclass_auroc(probs, y, num_classes=3, average="none")
    assert auroc[:2] == pytest.approx(ref[:2].tolist(), abs=1e-6)
    assert m["auroc"] == pytest.approx(float(ref[:2].mean()), abs=1e-6)


def test_evaluate_small_class_one_note(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n_per_class=10, counts={"square": 2}, name="small")
    model = make_model(tmp_path / "model", data)
    synth = make_synthetic(tmp_path / "synth", data, model, n_per_class=4)
    assert "square" not in set(pd.read_csv(data / "labels.csv").query("split == 'test'")["class"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(app, [
            "evaluate", "--real", str(data), "--synthetic", str(synth), "--out",
            str(tmp_path / "report"), "--seeds", "2", "--real-fraction", "1.0",
            "--baselines", "none", "--epochs", "1", "--patience", "1", "--feature-size", "32",
            "--size", "16", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    noisy = [w for w in caught if "torchmetrics" in w.filename or issubclass(
        w.category, UserWarning) and "samples" in str(w.message)]
    assert not noisy, [str(w.message) for w in noisy]
    assert "UserWarning" not in res.output
    assert " ".join(res.output.split()).count(NOTE) == 1
