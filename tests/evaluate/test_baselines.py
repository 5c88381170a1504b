"""The augment and oracle baselines: same budget, seeded, leakage-checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.errors import BadUsageError
from medsynth.evaluate.baselines import augmenter, draw_extra, parse_baselines, repeat_to
from medsynth.evaluate.benchmark import plan_arms
from medsynth.evaluate.config import parse_fraction
from medsynth.evaluate.inputs import ImageSet


def _set(counts: list[int], name: str = "s") -> ImageSet:
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])
    x = torch.rand(len(y), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return ImageSet(name, x, y, [f"{name}{i}" for i in range(len(y))])


def test_parse_baselines() -> None:
    assert parse_baselines("oracle, augment") == ["augment", "oracle"]
    assert parse_baselines("none") == [] and parse_baselines("") == []
    with pytest.raises(BadUsageError, match="unknown baseline"):
        parse_baselines("augment,mixup")


def test_plan_arms_adds_baselines_per_fraction() -> None:
    arms = plan_arms([parse_fraction("1.0"), parse_fraction("10")], ["a", "b"],
                     ["augment", "oracle"])
    names = [(x.setting, x.fraction_label, x.kind) for x in arms]
    assert names[:5] == [("real", "1.0", "real"), ("real+a", "1.0", "synthetic"),
                         ("real+b", "1.0", "synthetic"), ("real+augment", "1.0", "augment"),
                         ("real+oracle", "1.0", "oracle")]
    assert names[-2:] == [("a", "none", "synthetic-only"), ("b", "none", "synthetic-only")]
    # The baselines match the first synthetic set's size.
    assert {x.synthetic for x in arms if x.kind in ("augment", "oracle")} == {"a"}


def test_augment_arm_has_the_synthetic_arms_size() -> None:
    real = _set([4, 6])
    rep = repeat_to(real, {0: 10, 1: 3}, seed=0)
    assert torch.bincount(rep.y).tolist() == [14, 9]
    ids = np.array(rep.ids)
    # Every real image appears, as evenly as the count allows (ceil/floor).
    for k, n in ((0, 4), (1, 6)):
        _, c = np.unique(ids[rep.y.numpy() == k], return_counts=True)
        assert len(c) == n and c.max() - c.min() <= 1
    assert repeat_to(real, {0: 10, 1: 3}, seed=0).ids == rep.ids
    assert repeat_to(real, {0: 10, 1: 3}, seed=1).ids != rep.ids


def test_augmenter_is_seeded_bounded_and_mild() -> None:
    x = torch.zeros(6, 3, 32, 32)
    x[:, :, 8:24, 8:24] = 0.8  # a bright square on black
    a = augmenter(3, 32, seed=3)(x)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(augmenter(3, 32, seed=3)(x), a)
    assert not torch.equal(augmenter(3, 32, seed=4)(x), a)
    # Changed, but the square is still mostly where it was (small affine).
    assert (a - x).abs().mean() > 0.005
    inside = a[:, :, 12:20, 12:20].mean()
    assert inside > 0.5 and a[:, :, :4, :4].mean() < 0.2
    # Grayscale: one channel in, one out.
    g = augmenter(1, 32, seed=0)(x[:, :1])
    assert g.shape == (6, 1, 32, 32)


def test_augmenter_moves_volumes_mildly_in_3d() -> None:
    x = torch.zeros(4, 1, 16, 16, 16)
    x[:, :, 4:12, 4:12, 4:12] = 0.8  # a bright cube
    a = augmenter(1, 16, seed=3)(x)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(augmenter(1, 16, seed=3)(x), a)
    assert (a - x).abs().mean() > 0.005
    assert a[:, :, 6:10, 6:10, 6:10].mean() > 0.5 and a[:, :, :2, :2, :2].mean() < 0.2
    # the in-plane rotation leaves the slice axis alone: cube's top and bottom stay put
    # (scale/shift along it are a few percent at most)
    assert a[:, :, 0].mean() < 0.05 and a[:, :, 8].mean() > 0.12  # cube: 0.8 * 1/4 of a slice


def test_oracle_draws_as_many_extra_images_per_class() -> None:
    extra = _set([5, 20, 8], name="e")
    d = draw_extra(extra, {0: 3, 1: 12, 2: 30}, seed=0)
    assert torch.bincount(d.y, minlength=3).tolist() == [3, 12, 8]  # all 8 when fewer exist
    assert len(set(d.ids)) == len(d.ids)
    assert draw_extra(extra, {0: 3, 1: 12, 2: 30}, seed=0).ids == d.ids
    assert draw_extra(extra, {0: 3, 1: 12, 2: 30}, seed=1).ids != d.ids


def test_extra_real_leakage_checks(tmp_path: Path, shapes: dict[str, Path]) -> None:
    from medsynth.errors import MedsynthError
    from medsynth.evaluate.baselines import load_extra_real
    from medsynth.imaging.dataset import open_dataset

    from .conftest import make_dataset

    real = open_dataset(shapes["data"])
    extra, notes = load_extra_real(shapes["extra"], real, 16, real.classes)
    assert len(extra) == 45 and extra.x.shape[-1] == 16 and notes == []
    with pytest.raises(MedsynthError, match="is the --real dataset"):
        load_extra_real(shapes["data"], real, 16, real.classes)
    twin = make_dataset(tmp_path / "twin", name="twin")  # same seed: the same pixels
    with pytest.raises(MedsynthError, match="are real test images"):
        load_extra_real(twin, real, 16, real.classes)
