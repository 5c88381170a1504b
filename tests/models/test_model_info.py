"""The model-info record and the model folder: mirror save/load, format 1, refine, 3D bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.artifacts import write_manifest
from medsynth.errors import MedsynthError
from medsynth.models.bundle import export_model, load_bundle
from medsynth.models.denoiser import DenoiserSpec, build_denoiser
from medsynth.models.info import (
    AutoencoderInfo,
    DenoiserInfo,
    ModelInfo,
    NoiseSchedule,
    PrototypeInfo,
    RefinedFrom,
    load_model_info,
    save_model_info,
)
from medsynth.models.intensity import IntensityMapping
from medsynth.models.text_encoder import TextEncoderRef

# medsynth_model.json exactly as the first release (format 1, main before the seams work) wrote
# it for a tiny 2-class RGB model (tests/train's tiny recipe).
FORMAT1 = {
    "format": 1, "classes": ["red", "blue"], "null_class": 2, "channels": 3, "size": 16,
    "spatial_dims": 2, "dtype": "uint8", "modality": "XC", "denoiser": "unet2d",
    "prediction_type": "v_prediction", "intensity": {"dtype": "uint8", "low": 0.0, "high": 255.0},
    "text_encoder": {"name": "all-MiniLM-L6-v2", "kind": "encoder", "layer": -1, "max_tokens": 64,
                     "hidden_size": 384, "model_type": "bert"},
    "prototypes": {"file": None, "per_class": 4, "strength": 0.8, "temperature": 0.01,
                   "classes_with_bank": []},
    "conditioning": {"class": "timestep embedding (num_class_embeds = n_classes + 1)",
                     "text": "cross-attention over token features", "p_drop_class": 0.1,
                     "p_drop_text": 0.2, "null_text": "one all-zero token"},
    "class_head": "class_head.safetensors", "augmentation": {"hflip": True, "vflip": True},
    "train_splits": ["train"], "steps": 4,
}


def _info(**changes: object) -> ModelInfo:
    base = dict(classes=["a", "b"], channels=1, spatial_dims=2, shape=[16, 16], dtype="uint16",
                modality="CT", intensity=IntensityMapping("uint16", 10.0, 4000.0),
                text_encoder=TextEncoderRef(kind="encoder", hidden_size=12, model_type="bert"),
                denoiser=DenoiserInfo(kind="diffusers", spec={"channels": 1}),
                prediction_type="v_prediction",
                prototypes=PrototypeInfo(per_class=4, strength=0.5, temperature=0.1),
                train_splits=["train"], steps=3)
    base.update(changes)
    return ModelInfo(**base)  # type: ignore[arg-type]


def test_save_and_load_are_mirrors(tmp_path: Path) -> None:
    full = _info(spacing=[0.5, 0.7], affine=np.diag([0.5, 0.7, 1.0, 1.0]).tolist(),
                 autoencoder=AutoencoderInfo(folder="autoencoder", scaling_factor=0.9,
                                             latent_channels=4, latent_shape=[4, 4]),
                 refined_from=RefinedFrom(path="../model", sha256="ab" * 32, method="dpo"),
                 noise_schedule=NoiseSchedule(kind="ddpm", folder="scheduler"),
                 augmentation={"hflip": False, "vflip": False})
    for info in (_info(), full):
        save_model_info(tmp_path, info)
        back = load_model_info(tmp_path)
        assert back == info and back.to_dict() == info.to_dict()
    raw = json.loads((tmp_path / "medsynth_model.json").read_text())
    assert raw["format"] == 2 and raw["spacing"] == [0.5, 0.7] and raw["affine"][1][1] == 0.7
    assert back.null_class == 2 and back.size == 16
    # Keys a later format adds are ignored; a newer format is refused with a clear message.
    (tmp_path / "medsynth_model.json").write_text(json.dumps({**raw, "new_key": 1}))
    assert load_model_info(tmp_path) == full
    (tmp_path / "medsynth_model.json").write_text(json.dumps({**raw, "format": 99}))
    with pytest.raises(MedsynthError, match="newer medsynth"):
        load_model_info(tmp_path)
    (tmp_path / "medsynth_model.json").write_text(json.dumps({"format": 2, "classes": ["a"]}))
    with pytest.raises(MedsynthError, match="incomplete model info"):
        load_model_info(tmp_path)


def _write_model(folder: Path, info: ModelInfo, spec: DenoiserSpec, stage: str = "train",
                 ) -> torch.nn.Module:
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    den = build_denoiser(spec)
    export_model(folder, info, denoiser=den,
                 noise_scheduler=DDPMScheduler(num_train_timesteps=100,
                                               prediction_type=info.prediction_type))
    write_manifest(folder, stage, config={"train_splits": ["train"]}, inputs=[], outputs={})
    return den


def _spec(**kw: object) -> DenoiserSpec:
    base = dict(channels=1, size=16, n_classes=2, cross_attention_dim=12, block_out_channels=(8, 16),
                attention_levels=(False, True), norm_num_groups=4)
    base.update(kw)
    return DenoiserSpec(**base)  # type: ignore[arg-type]


def test_format1_model_folder_still_loads(tmp_path: Path) -> None:
    """A model folder of the first release: format-1 info, diffusers UNet, no typed record."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    spec = _spec(channels=3, cross_attention_dim=384)
    torch.manual_seed(0)
    net = build_denoiser(spec).net
    # Exactly the first release's layout: save_pretrained of the UNet, EMA and raw.
    net.save_pretrained(tmp_path / "unet")
    net.save_pretrained(tmp_path / "unet_raw")
    DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction").save_pretrained(
        tmp_path / "scheduler")
    (tmp_path / "medsynth_model.json").write_text(json.dumps(FORMAT1))
    write_manifest(tmp_path, "train", config={"train_splits": ["train"]}, inputs=[], outputs={})
    b = load_bundle(tmp_path)
    assert b.info.format == 1 and b.info.denoiser.kind == "diffusers"
    assert (b.classes, b.null_class, b.channels, b.size, b.shape) == (
        ["red", "blue"], 2, 3, 16, (16, 16))
    assert (b.dtype, b.modality, b.prediction_type, b.spatial_dims) == (
        "uint8", "XC", "v_prediction", 2)
    assert b.info.conditioning.p_drop_text == 0.2 and b.info.prototypes.strength == 0.8
    assert b.info.augmentation == {"hflip": True, "vflip": True} and b.info.steps == 4
    assert b.train_splits == ["train"] and b.spacing is None and b.sample_shape == (3, 16, 16)
    assert isinstance(b.unet, UNet2DConditionModel)
    for p, q in zip(b.denoiser.net.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_refined_model_loads_like_a_trained_one(tmp_path: Path) -> None:
    trained = tmp_path / "model"
    _write_model(trained, _info(), _spec())
    parent = load_bundle(trained)
    refined = tmp_path / "refined"
    info = _info(refined_from=RefinedFrom(path=str(trained), sha256=parent.sha256, method="dpo"),
                 denoiser=DenoiserInfo(kind="diffusers", raw_folder=None))
    _write_model(refined, info, _spec(), stage="refine")
    b = load_bundle(refined)
    assert b.manifest.stage == "refine" and b.info.refined_from.sha256 == parent.sha256
    assert not (refined / "unet_raw").exists()
    raw = load_bundle(refined, ema=False)  # one set of weights: the raw request gets it
    for p, q in zip(raw.denoiser.parameters(), b.denoiser.parameters(), strict=True):
        assert torch.equal(p, q)
    gen = tmp_path / "synth"
    write_manifest(gen, "generate", config={}, inputs=[], outputs={})
    with pytest.raises(MedsynthError, match="expected a model"):
        load_bundle(gen)


def test_3d_monai_bundle(tmp_path: Path) -> None:
    from medsynth.models.sampler import denoise

    spec = _spec(kind="monai", shape=(8, 8, 8))
    info = _info(spatial_dims=3, shape=[8, 8, 8], spacing=[2.0, 1.0, 1.0],
                 affine=np.diag([1.0, 1.0, 2.0, 1.0]).tolist(),
                 denoiser=DenoiserInfo(kind="monai", spec=spec.to_dict()))
    _write_model(tmp_path, info, spec)
    b = load_bundle(tmp_path)
    assert b.denoiser.kind == "monai" and b.spatial_dims == 3 and b.sample_shape == (1, 8, 8, 8)
    assert b.spacing == (2.0, 1.0, 1.0) and b.affine.shape == (4, 4)
    assert json.loads((tmp_path / "unet" / "config.json").read_text())["_class_name"] == \
        "DiffusionModelUNet"
    h, m = torch.randn(2, 3, 12), torch.ones(2, 3, dtype=torch.long)
    x = denoise(b.denoiser, b.make_scheduler("ddim"), class_ids=[0, 1], text_hidden=h,
                text_mask=m, null_class=b.null_class, null_hidden=torch.zeros(1, 1, 12),
                null_mask=torch.ones(1, 1, dtype=torch.long), seeds=[1, 2],
                sample_shape=b.sample_shape, steps=2, guidance=2.0)
    assert x.shape == (2, 1, 8, 8, 8) and b.to_pixels(x).dtype == np.uint16


def test_latent_model_samples_latents_and_names_a_missing_autoencoder(tmp_path: Path) -> None:
    info = _info(autoencoder=AutoencoderInfo(folder="autoencoder", scaling_factor=1.0,
                                             latent_channels=4, latent_shape=[4, 4]))
    _write_model(tmp_path, info, _spec())
    b = load_bundle(tmp_path)
    assert b.latent and b.sample_shape == (4, 4, 4)
    with pytest.raises(MedsynthError, match="no autoencoder"):
        b.decode(torch.zeros(1, 4, 4, 4))
