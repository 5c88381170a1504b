"""Tiny latent/3D fixtures: a 16^3 prostate phantom set and a 16 px RGB set, each with a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.artifacts import input_ref, now_iso, write_manifest
from medsynth.store import DescriptionRecord, record_writer
from medsynth.train.config import TrainConfig

TINY_AE = dict(latent=True, ae_block_out_channels=[8, 16], ae_norm_num_groups=4, ae_max_steps=4,
               ae_batch_size=2, ae_checkpoint_every=2, ae_log_every=1, ae_warmup_steps=0)
"""A seconds-long autoencoder phase: 2 levels (latents half the size per axis)."""
TINY_3D = dict(spatial_dims=3, block_out_channels=[8, 16], attention_levels=[False, True],
               norm_num_groups=4, attention_head_dim=8)


def tiny_latent(**changes: object) -> TrainConfig:
    """TrainConfig.tiny with the tiny autoencoder phase (and ``changes``)."""
    return TrainConfig.tiny(**{**TINY_AE, **changes})


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def store_from_reports(root: Path, dataset: object) -> Path:
    """A describe-stage store whose texts are the phantom's own reports (labels.csv)."""
    table = dataset.table  # type: ignore[attr-defined]
    for cls, grp in table.groupby("class"):
        with record_writer(root, str(cls)) as w:
            for _, r in grp.iterrows():
                w.write(DescriptionRecord(
                    image_id=str(r["image_id"]), path=str(r["path"]), cls=str(cls),
                    split=str(r["split"]), attributes={}, text=str(r["report"]),
                    backend="template", model="none", template_version="1",
                    timestamp=now_iso()).to_dict())
    write_manifest(root, "describe", config={}, inputs=[input_ref(dataset.root, "data")],  # type: ignore[attr-defined]
                   outputs={"classes": dataset.classes})  # type: ignore[attr-defined]
    return root


@pytest.fixture(scope="session")
def prostate16(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 prostate phantom volumes of 16^3 (4 mm voxels), 3 classes, and a store of reports."""
    from medsynth.data.demo.common import DemoConfig, write_demo

    root = tmp_path_factory.mktemp("prostate16")
    ds = write_demo(DemoConfig(demo="prostate", out=str(root / "ds"), n_per_class=4, size=16,
                               seed=0, workers=1))
    store_from_reports(root / "store", ds)
    return {"root": root, "ds": root / "ds", "store": root / "store"}


@pytest.fixture(scope="session")
def rgb16(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two-class 16 px RGB images (dermoscopy-like modality XC: flips allowed) and a store."""
    from tests.train.fixtures import make_dataset, make_store

    root = tmp_path_factory.mktemp("rgb16")
    ds = make_dataset(root / "ds", size=16)
    make_store(root / "store", ds)
    return {"root": root, "ds": root / "ds", "store": root / "store"}
