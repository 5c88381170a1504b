"""The latent/3D recipes: valid, their networks fit the data they are written for, and the CPU
prostate recipe runs (a few steps) on phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.models.autoencoder import build_autoencoder, decode_bytes
from medsynth.train.autoencoder import ae_spec, patch_shape
from medsynth.train.config import TrainConfig
from medsynth.train.data import TrainData
from medsynth.train.loop import denoiser_spec, train

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _data(shape: tuple[int, ...], channels: int = 1) -> TrainData:
    """A TrainData stand-in with the recipe's data shape (the pixels are never read here)."""
    pixels = np.zeros((1, channels, *(1,) * len(shape)), dtype=np.uint16)
    data = TrainData(pixels=pixels, labels=np.zeros(1, dtype=np.int64), texts=[""],
                     image_ids=["a"], classes=["no_lesion", "pirads_3", "pirads_4_5"],
                     modality="MR", dtype="uint16", hflip=False, vflip=False, n_described=0,
                     source_size=shape)
    object.__setattr__(data, "pixels", np.broadcast_to(pixels, (1, channels, *shape)))
    return data


@pytest.mark.parametrize("name, shape, channels, latent", [
    ("prostate-cpu.yaml", (32, 32, 32), 1, (8, 8, 8)),
    ("prostate-cpu-64.yaml", (64, 64, 64), 1, (16, 16, 16)),
    ("prostate-gpu.yaml", (32, 256, 256), 1, (8, 64, 64)),
    ("derm-latent-cpu.yaml", (64, 64), 3, (16, 16)),
])
def test_latent_recipes_fit_their_data(name: str, shape: tuple[int, ...], channels: int,
                                       latent: tuple[int, ...]) -> None:
    cfg = TrainConfig.from_yaml(EXAMPLES / name)
    assert cfg.latent and (cfg.spatial_dims or 2) == len(shape)
    if cfg.shape:
        assert tuple(cfg.shape) == shape
    data = _data(shape, channels)
    spec = ae_spec(cfg, data)
    assert spec.latent_shape(shape) == latent
    patch = patch_shape(cfg, data, spec)
    assert all(p <= s for p, s in zip(patch, shape, strict=True))
    den = denoiser_spec(cfg, data, cross_attention_dim=384,
                        latent=(spec.latent_channels, spec.latent_shape(shape)))
    assert den.shape == latent and den.channels == cfg.ae_latent_channels
    assert den.kind == ("monai" if len(shape) == 3 else "diffusers")
    assert not spec.attention or len(shape) == 2  # no non-local attention in 3D
    build_autoencoder(spec)  # MONAI accepts the spec
    if name == "prostate-gpu.yaml":  # a whole 32x256x256 volume decodes within a few GiB
        assert decode_bytes(spec, latent) < 4 * 2**30


def test_prostate_cpu_recipe_runs_on_phantoms(prostate16: dict[str, Path]) -> None:
    """The CPU recipe, shortened to 2 + 2 steps, on 16^3 phantoms (patches clip to the volume)."""
    cfg = TrainConfig.from_yaml(EXAMPLES / "prostate-cpu.yaml").replace(
        ae_max_steps=2, ae_checkpoint_every=2, max_steps=2, checkpoint_every=2, num_threads=1,
        ae_batch_size=2, batch_size=2, warmup_steps=0, ae_warmup_steps=0)
    out = train(prostate16["ds"], prostate16["root"] / "recipe", cfg=cfg,
                store_path=prostate16["store"], progress=False)
    from medsynth.models.bundle import load_bundle

    b = load_bundle(out)
    assert b.spatial_dims == 3 and b.sample_shape == (4, 4, 4, 4) and b.class_probabilities
