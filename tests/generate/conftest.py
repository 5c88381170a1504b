"""Tiny, seeded model folders in the ``train`` contract layout, with a dataset and a store.

The model is built with the train stage's own pieces (``build_denoiser``, ``export_model``,
the ``ModelInfo`` record, prototypes from the real text encoder on the store's descriptions) and
random UNet weights: generate only needs the layout and the conditioning to be real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DESCRIPTIONS = {
    "pneumonia": ["patchy opacity in the right lower zone", "dense consolidation, left base"],
    "normal": ["clear lung fields, sharp costophrenic angles"],
    "melanoma": ["asymmetric dark brown lesion with irregular borders",
                 "multicoloured lesion, blue-white veil"],
    "nevus": ["small round tan lesion, regular border"],
}


def _dataset(root: Path, classes: list[str], channels: int, dtype: str, modality: str) -> Path:
    from medsynth.imaging.dataset import finish_dataset
    from medsynth.imaging.save import save_png
    from medsynth.store import class_dirname

    rng = np.random.default_rng(0)
    rows = []
    hi = 255 if dtype == "uint8" else 4095
    for c in classes:
        for i in range(2):
            arr = rng.integers(0, hi, (channels, 16, 16)).astype(dtype)
            rel = f"images/{class_dirname(c)}/{i}.png"
            save_png(arr, root / rel)
            rows.append({"image_id": f"{c}_{i}", "path": rel, "class": c, "split": "train"})
    finish_dataset(root, pd.DataFrame(rows), config={"demo": "generate-tests"}, classes=classes,
                   channels=channels, dtype=dtype, modality=modality)
    return root


def _store(root: Path, dataset: Path, classes: list[str]) -> Path:
    from medsynth.artifacts import input_ref, now_iso, write_manifest
    from medsynth.store import DescriptionRecord, record_writer

    for c in classes:
        with record_writer(root, c) as w:
            for i, text in enumerate(DESCRIPTIONS.get(c, [f"a {c} image"])):
                w.write(DescriptionRecord(
                    image_id=f"{c}_{i}", path=f"images/{c}/{c}_{i}.png", cls=c, split="train",
                    attributes={}, text=text, backend="fixture", model="none",
                    template_version="0", timestamp=now_iso()).to_dict())
    write_manifest(root, "describe", config={}, inputs=[input_ref(dataset, "data")],
                   outputs={"classes": classes})
    return root


def make_model(root: Path, *, classes: list[str], channels: int, dtype: str, modality: str,
               size: int = 16, seed: int = 0) -> Path:
    """A model folder (EMA + raw UNet, scheduler, info, prototypes, manifest) with random weights."""
    import torch
    from diffusers import DDPMScheduler

    from medsynth.artifacts import input_ref, write_manifest
    from medsynth.models.bundle import export_model
    from medsynth.models.denoiser import DenoiserSpec, build_denoiser
    from medsynth.models.info import DenoiserInfo, ModelInfo, PrototypeInfo
    from medsynth.models.intensity import IntensityMapping
    from medsynth.models.prototypes import PROTOTYPE_FILE, build_prototypes
    from medsynth.models.text_encoder import TextEncoder, TextEncoderRef

    dataset = _dataset(root / "dataset", classes, channels, dtype, modality)
    store = _store(root / "store", dataset, classes)
    model = root / "model"
    model.mkdir(parents=True)
    ref = TextEncoderRef()
    enc = TextEncoder(ref)
    torch.manual_seed(seed)
    spec = DenoiserSpec(channels=channels, size=size, n_classes=len(classes),
                        cross_attention_dim=enc.hidden_size, block_out_channels=(16, 32),
                        attention_levels=(False, True), norm_num_groups=8)
    den = build_denoiser(spec)
    texts = [t for c in classes for t in DESCRIPTIONS.get(c, [f"a {c} image"])]
    labels = torch.tensor([i for i, c in enumerate(classes)
                           for _ in DESCRIPTIONS.get(c, [f"a {c} image"])])
    hidden, mask = enc.encode(texts)
    banks = build_prototypes(hidden, mask, labels, len(classes), 4)
    mapping = IntensityMapping("uint8", 0, 255) if dtype == "uint8" else \
        IntensityMapping(dtype, 0, 4095)
    info = ModelInfo(
        classes=classes, channels=channels, spatial_dims=2, shape=[size, size], dtype=dtype,
        modality=modality, intensity=mapping, text_encoder=ref,
        denoiser=DenoiserInfo(kind=spec.kind, spec=spec.to_dict()),
        prototypes=PrototypeInfo(file=PROTOTYPE_FILE, per_class=4, strength=0.3, temperature=0.1,
                                 classes_with_bank=sorted(banks)),
        spacing=[0.7, 0.7], train_splits=["train"])
    export_model(model, info, denoiser=den, noise_scheduler=DDPMScheduler(num_train_timesteps=1000),
                 prototypes=banks)
    write_manifest(model, "train", config={"train_splits": ["train"], "fixture": True},
                   inputs=[input_ref(dataset, "data"), input_ref(store, "describe")],
                   outputs={"classes": classes})
    return model


@pytest.fixture(scope="session")
def gray16_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-bit grayscale radiograph-like model (classes normal, pneumonia; modality DX)."""
    return make_model(tmp_path_factory.mktemp("gray16"), classes=["normal", "pneumonia"],
                      channels=1, dtype="uint16", modality="DX")


def train_model(root: Path, *, classes: list[str], channels: int, dtype: str, modality: str) -> Path:
    """A model made by the real ``medsynth train`` (tiny recipe, 2 optimizer steps)."""
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import train

    dataset = _dataset(root / "dataset", classes, channels, dtype, modality)
    store = _store(root / "store", dataset, classes)
    cfg = TrainConfig(block_out_channels=[16, 32], attention_levels=[False, True], max_steps=2,
                      batch_size=4, warmup_steps=1, prototypes_per_class=4, checkpoint_every=2,
                      log_every=1, sample_every=0, sample_per_class=1, sample_steps=2)
    return train(dataset, root / "model", cfg=cfg, store_path=store, progress=False)


@pytest.fixture(scope="session")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-bit RGB dermoscopy-like model (melanoma, nevus; XC) trained by ``medsynth train``."""
    return train_model(tmp_path_factory.mktemp("rgb"), classes=["melanoma", "nevus"],
                       channels=3, dtype="uint8", modality="XC")
