"""Session fixtures: a tiny SD pipeline, a grayscale and an RGB 16 px dataset, a tiny parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.train.config import TrainConfig

RUN = dict(max_steps=2, batch_size=4, warmup_steps=0, checkpoint_every=1, sample_every=0,
           sample_per_class=1, sample_steps=2, log_every=1, prototypes_per_class=4)
"""Bookkeeping only: the network comes from the init source."""


def run_cfg(**changes: object) -> TrainConfig:
    return TrainConfig(**{**RUN, **changes})


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.prior.components import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="session")
def gray16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.train.fixtures import make_dataset

    return make_dataset(tmp_path_factory.mktemp("gray") / "ds", channels=1).root


@pytest.fixture(scope="session")
def rgb16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.train.fixtures import make_dataset

    return make_dataset(tmp_path_factory.mktemp("rgb") / "ds", channels=3,
                        classes=("red", "blue")).root


@pytest.fixture(scope="session")
def sd_model(tiny_sd: Path, gray16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step full fine-tune of the tiny SD pipeline on grayscale images."""
    from medsynth.train.loop import train

    return train(gray16, tmp_path_factory.mktemp("sdm") / "m", cfg=run_cfg(init=str(tiny_sd)),
                 progress=False)


@pytest.fixture(scope="session")
def lora_model(tiny_sd: Path, gray16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medsynth.train.loop import train

    return train(gray16, tmp_path_factory.mktemp("sdl") / "m",
                 cfg=run_cfg(init=str(tiny_sd), adapter="lora", lora_rank=4), progress=False)


@pytest.fixture(scope="session")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny medsynth model of classes red, green (another dataset)."""
    from medsynth.train.loop import train
    from tests.train.fixtures import make_dataset

    root = tmp_path_factory.mktemp("parent")
    ds = make_dataset(root / "ds", channels=3, classes=("red", "green"), seed=1)
    return train(ds.root, root / "m", cfg=TrainConfig.tiny(), progress=False)
