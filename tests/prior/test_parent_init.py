"""--init a medsynth model: classes matched by name, lineage and the leakage guard follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.models.bundle import load_bundle
from medsynth.models.init_source import parent_denoiser, parent_head, resolve_init
from tests.prior.conftest import run_cfg


def test_rows_remapped_by_name(parent: Path) -> None:
    from medsynth.models.denoiser import DenoiserSpec, build_class_head

    pb = load_bundle(parent)  # classes red, green
    assert pb.classes == ["red", "green"]
    src = resolve_init(str(parent))
    spec = DenoiserSpec.from_dict({**pb.info.denoiser.spec, "n_classes": 3})
    den = parent_denoiser(src, spec, pb.classes, ["blue", "red", "white"])
    old = pb.denoiser.net.class_embedding.weight
    new = den.net.class_embedding.weight
    assert den.n_class_embeds == 4 and den.net.config.num_class_embeds == 4
    assert torch.equal(new[1], old[0])  # red kept its row
    assert torch.equal(new[0], old[2]) and torch.equal(new[2], old[2])  # new: the null row
    assert torch.equal(new[3], old[2])  # the null row moved to the new null index
    for k, v in pb.denoiser.net.state_dict().items():
        if k != "class_embedding.weight":
            assert torch.equal(den.net.state_dict()[k], v), k
    from safetensors.torch import load_file

    head = build_class_head(spec)
    parent_head(src, head, pb.classes, ["blue", "red", "white"])
    ph = load_file(str(parent / "class_head.safetensors"))
    assert torch.equal(head[2].weight[1], ph["2.weight"][0])
    assert torch.equal(head[2].weight[0], ph["2.weight"].mean(0))
    assert torch.equal(head[0].weight, ph["0.weight"])


def test_adapt_parent_to_new_classes(parent: Path, rgb16: Path, tmp_path: Path) -> None:
    from medsynth.artifacts import walk_lineage
    from medsynth.models.info import load_model_info
    from medsynth.train.loop import train

    out = train(rgb16, tmp_path / "child", cfg=run_cfg(init=str(parent)), progress=False)
    info = load_model_info(out)
    assert info.classes == ["red", "blue"] and info.format == 2
    assert info.initialized_from.classes_kept == ["red"]
    assert info.initialized_from.classes_new == ["blue"]
    b = load_bundle(out)
    assert b.denoiser.n_class_embeds == 3  # save/load round-trips the new class count
    lin = walk_lineage(out)
    assert [m.folder.resolve() for m in lin.models] == [out.resolve(), parent.resolve()]


def test_prior_that_saw_the_test_split_is_refused(rgb16: Path, tmp_path: Path) -> None:
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import train

    leaky = train(rgb16, tmp_path / "leaky", cfg=TrainConfig.tiny(splits=["train", "test"]),
                  progress=False)
    with pytest.raises(MedsynthError, match="trained on the test split") as e:
        train(rgb16, tmp_path / "o", cfg=run_cfg(init=str(leaky)), progress=False)
    assert "\n" not in e.value.message and not (tmp_path / "o").exists()


def test_evaluate_leakage_guard_follows_the_prior(parent: Path, rgb16: Path,
                                                  tmp_path: Path) -> None:
    """The child's lineage reaches the parent's (other) dataset: evaluate refuses it unless
    the datasets are declared independent, as for any generator trained on other data."""
    from typer.testing import CliRunner

    from medsynth.cli import app
    from medsynth.evaluate.inputs import check_leakage
    from medsynth.imaging.dataset import open_dataset
    from medsynth.synthset import open_synthetic
    from medsynth.train.loop import train

    child = train(rgb16, tmp_path / "child", cfg=run_cfg(init=str(parent)), progress=False)
    res = CliRunner().invoke(app, ["generate", str(child), "--out", str(tmp_path / "s"),
                                   "--n", "1", "--steps", "2"])
    assert res.exit_code == 0, res.output
    synth, real = open_synthetic(tmp_path / "s"), open_dataset(rgb16)
    assert len(synth.lineage.models) == 2
    with pytest.raises(MedsynthError, match="also trained on another dataset"):
        check_leakage(synth, real, independent_model=False)
    assert check_leakage(synth, real, independent_model=True)


def test_val_split_warning_counts_only_this_dataset(rgb16: Path, tmp_path: Path) -> None:
    """A prior trained on the val split of ITS dataset is not 'the val split used for early
    stopping' here; a child trained on this dataset's val split is."""
    from typer.testing import CliRunner

    from medsynth.cli import app
    from medsynth.evaluate.inputs import check_leakage
    from medsynth.imaging.dataset import open_dataset
    from medsynth.synthset import open_synthetic
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import train
    from tests.train.fixtures import make_dataset

    other = make_dataset(tmp_path / "other", channels=3, classes=("red", "blue"), seed=3).root
    prior = train(other, tmp_path / "prior", cfg=TrainConfig.tiny(splits=["train", "val"]),
                  progress=False)
    real = open_dataset(rgb16)
    for splits, warned in ((["train"], False), (["train", "val"], True)):
        child = train(rgb16, tmp_path / f"c{len(splits)}",
                      cfg=run_cfg(init=str(prior), splits=splits), progress=False)
        res = CliRunner().invoke(app, ["generate", str(child), "--out",
                                       str(tmp_path / f"s{len(splits)}"), "--n", "1",
                                       "--steps", "2"])
        assert res.exit_code == 0, res.output
        notes = check_leakage(open_synthetic(tmp_path / f"s{len(splits)}"), real,
                              independent_model=True)
        assert any("val split used for early stopping" in n for n in notes) is warned, notes
