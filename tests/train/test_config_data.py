"""TrainConfig validation/YAML, every example recipe, and the training-data loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.errors import MedsynthError
from medsynth.imaging.dataset import open_dataset
from medsynth.store import open_store
from medsynth.train.config import TrainConfig
from medsynth.train.data import flips_for, load_train_data
from tests.train.fixtures import make_dataset, make_store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# refine-*.yaml are refine recipes (tests/refine/test_run.py::test_recipes_parse)
@pytest.mark.parametrize("recipe", sorted(p for p in EXAMPLES.glob("*.yaml")
                                          if not p.name.startswith("refine-")),
                         ids=lambda p: p.name)
def test_every_example_recipe_is_a_valid_config(recipe: Path) -> None:
    cfg = TrainConfig.from_yaml(recipe)
    assert cfg.max_steps >= 1
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {"derm-cpu.yaml", "cxr-cpu.yaml", "derm-gpu.yaml", "cxr-gpu.yaml"} <= names


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(size=32, max_steps=7, classes=["a", "b"])
    (tmp_path / "r.yaml").write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(tmp_path / "r.yaml") == cfg


@pytest.mark.parametrize("bad, match", [
    ({"p_drop_class": 1.5}, "p_drop_class"),
    ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"block_out_channels": [8, 12], "attention_levels": [False, True]}, "norm_num_groups"),
    ({"attention_levels": [True]}, "attention_levels"),
    ({"batch_size": 0}, "batch_size"),
    ({"hflip": "maybe"}, "hflip"),
    ({"bogus": 1}, "unknown keys"),
    ({"max_steps": "ten"}, "max_steps"),
    ({"denoiser": "keras"}, "denoiser must be auto, diffusers or monai"),
    ({"ae_perceptual_weight": 0.5}, "ae_perceptual_weights"),
    ({"noise_schedule": "flow"}, "noise_schedule"),
    ({"noise_schedule": "rflow", "snr_gamma": 5.0}, "snr_gamma"),
    ({"shape": [16, 16, 16], "spatial_dims": 2}, "spatial_dims"),
    ({"ae_block_out_channels": [16, 24]}, "ae_norm_num_groups"),
    ({"ccella_loss": "bce"}, "ccella_loss"),
])
def test_bad_config_is_a_clear_error(bad: dict, match: str) -> None:
    with pytest.raises(MedsynthError, match=match):
        TrainConfig.from_dict(bad, source="recipe.yaml")


def test_flips_follow_the_modality() -> None:
    cfg = TrainConfig()
    assert flips_for("XC", cfg) == (True, True)  # dermoscopy: no orientation
    assert flips_for("DX", cfg) == (False, False)  # chest X-ray: left/right matters
    assert flips_for("CR", cfg) == (False, False)
    assert flips_for("DX", TrainConfig(hflip="yes")) == (True, False)
    assert flips_for("XC", TrainConfig(hflip="no", vflip="no")) == (False, False)
    assert flips_for("ES", cfg) == (True, False)  # endoscopy: up/down follows gravity


def test_one_definition_of_the_flip_rules() -> None:
    from medsynth.imaging.modality import allowed_flips

    for m in ("XC", "SM", "GM", "ES", "DX", "CR", "CT", "MR", "OT", "es"):
        assert flips_for(m, TrainConfig()) == allowed_flips(m)
    assert allowed_flips("sm") == (True, True) and allowed_flips("MR") == (False, False)


def test_load_train_split_with_texts(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", n_per_class=6)
    st = open_store(make_store(tmp_path / "st", ds, skip=1))
    data = load_train_data(ds, TrainConfig(), st, progress=False)
    assert len(data) == 8 and set(ds.table.set_index("image_id").loc[data.image_ids, "split"]) == {"train"}
    assert data.pixels.shape == (8, 3, 16, 16) and data.pixels.dtype == np.uint8
    assert data.n_described == 6 and data.texts.count("") == 2  # one skipped per class
    assert data.hflip and data.vflip


def test_uint16_gray_data_kept_and_resized(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", channels=1, dtype="uint16", modality="DX", size=16)
    data = load_train_data(ds, TrainConfig(size=8), progress=False)
    assert data.pixels.dtype == np.uint16 and data.pixels.shape[1:] == (1, 8, 8)
    assert data.pixels.max() > 255 and not data.hflip


def test_unknown_and_empty_classes(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    with pytest.raises(MedsynthError, match="unknown classes"):
        load_train_data(ds, TrainConfig(classes=["red", "green"]), progress=False)
    # A class with no images in the requested split.
    t = ds.table
    t.loc[t["class"] == "blue", "split"] = "test"
    with pytest.raises(MedsynthError, match="no images of class"):
        load_train_data(ds, TrainConfig(), progress=False)


def test_store_that_does_not_match_the_dataset(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    other = make_dataset(tmp_path / "other", classes=("red", "green"))
    st = open_store(make_store(tmp_path / "st", other))
    with pytest.raises(MedsynthError, match="does not match|lacks"):
        load_train_data(ds, TrainConfig(), st, progress=False)
    # Same ids, but the store says another class.
    swapped = make_dataset(tmp_path / "swapped", classes=("blue", "red"))
    t = swapped.table
    t["image_id"] = t["image_id"].str.replace("blue", "TMP").str.replace("red", "blue").str.replace("TMP", "red")
    st2 = open_store(make_store(tmp_path / "st2", swapped))
    with pytest.raises(MedsynthError, match="different class"):
        load_train_data(open_dataset(tmp_path / "ds"), TrainConfig(), st2, progress=False)
