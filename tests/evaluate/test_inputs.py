"""Opening inputs and the leakage guard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medsynth.artifacts import read_manifest, write_manifest
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.evaluate.config import EvaluateConfig, parse_fraction
from medsynth.evaluate.inputs import (
    check_leakage,
    load_real,
    load_synthetic,
    open_inputs,
    open_synthetic,
    to_unit,
)
from medsynth.imaging.dataset import open_dataset

from .conftest import CLASSES, make_dataset, make_model, make_synthetic


def test_open_synthetic_reads_contract(shapes: dict[str, Path]) -> None:
    s = open_synthetic(shapes["synth"])
    assert s.classes == CLASSES
    assert s.image_column == "png"
    assert s.model_manifest is not None and s.model_manifest.stage == "train"
    imgs = load_synthetic(s, 16, CLASSES, max_per_class=5)
    assert tuple(imgs.x.shape) == (15, 3, 16, 16)
    assert float(imgs.x.min()) >= 0 and float(imgs.x.max()) <= 1
    assert imgs.y.tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_real_split_loading_keeps_channels(shapes: dict[str, Path]) -> None:
    ds = open_dataset(shapes["data"])
    test = load_real(ds, "test", 32, ds.classes)
    assert len(test) == len(ds.split("test"))
    assert test.x.shape[1] == 3
    assert sorted(set(test.y.tolist())) == [0, 1, 2]


def test_to_unit_uses_dtype_range() -> None:
    import numpy as np

    assert to_unit(np.array([[[0, 65535]]], dtype=np.uint16)).tolist() == [[[0.0, 1.0]]]
    assert to_unit(np.array([[[0, 255]]], dtype=np.uint8)).tolist() == [[[0.0, 1.0]]]


def test_refuses_generator_trained_on_test(tmp_path: Path, shapes: dict[str, Path]) -> None:
    model = make_model(tmp_path / "leaky_model", shapes["data"], ["train", "test"])
    synth = make_synthetic(tmp_path / "leaky", shapes["data"], model, n_per_class=2)
    with pytest.raises(MedsynthError, match="trained on the test split"):
        open_inputs(shapes["data"], [synth], independent_model=False)
    # Even --independent-model does not excuse a model that saw this test split.
    with pytest.raises(MedsynthError, match="trained on the test split"):
        check_leakage(open_synthetic(synth), open_dataset(shapes["data"]), independent_model=True)


def test_refuses_generator_of_another_dataset(tmp_path: Path, shapes: dict[str, Path]) -> None:
    other = make_dataset(tmp_path / "other", n_per_class=6, seed=5)
    model = make_model(tmp_path / "other_model", other)
    synth = make_synthetic(tmp_path / "other_synth", other, model, n_per_class=2)
    with pytest.raises(MedsynthError, match="another dataset"):
        open_inputs(shapes["data"], [synth], independent_model=False)
    _, sets, warnings = open_inputs(shapes["data"], [synth], independent_model=True)
    assert len(sets) == 1 and any("another dataset" in w for w in warnings)


def test_missing_model_manifest_needs_independent(tmp_path: Path, shapes: dict[str, Path]) -> None:
    synth = tmp_path / "orphan"
    shutil.copytree(shapes["synth"], synth)
    m = read_manifest(synth)
    write_manifest(synth, "generate", config=m.config,
                   inputs=[{"path": str(tmp_path / "gone"), "stage": "train", "sha256": "x"}],
                   outputs=m.outputs)
    with pytest.raises(MedsynthError, match="no readable model"):
        open_inputs(shapes["data"], [synth], independent_model=False)


def test_unknown_class_and_missing_csv(tmp_path: Path, shapes: dict[str, Path]) -> None:
    synth = tmp_path / "badclass"
    shutil.copytree(shapes["synth"], synth)
    csv = synth / "samples.csv"
    csv.write_text(csv.read_text().replace(",disc,", ",blob,", 1))
    with pytest.raises(MedsynthError, match="blob"):
        open_inputs(shapes["data"], [synth], independent_model=False)
    csv.unlink()
    with pytest.raises(MedsynthError, match="samples.csv"):
        open_synthetic(synth)
    with pytest.raises(MedsynthError, match="not a medsynth generate"):
        open_synthetic(tmp_path)


def test_config_validation(tmp_path: Path) -> None:
    assert parse_fraction("0.1").fraction == 0.1
    assert parse_fraction("20").per_class == 20
    assert parse_fraction("1.0").label == "1.0"
    assert parse_fraction("1/class").per_class == 1
    assert parse_fraction("5/class") == parse_fraction("5")
    for bad in ("0", "1", "1.5", "-3", "abc", "0/class"):
        with pytest.raises(BadUsageError):
            parse_fraction(bad)
    kw = {"real": tmp_path, "synthetic": [tmp_path / "s"], "out": tmp_path / "o"}
    with pytest.raises(BadUsageError, match="classifier"):
        EvaluateConfig(**kw, classifier="vgg")
    with pytest.raises(BadUsageError, match="repeated"):
        EvaluateConfig(**kw, real_fractions=["0.5", "0.50"])
    with pytest.raises(BadUsageError, match="twice"):
        EvaluateConfig(real=tmp_path, synthetic=[tmp_path / "s", tmp_path / "s"], out=tmp_path)
