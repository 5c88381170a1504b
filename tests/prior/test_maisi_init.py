"""--init a MONAI bundle's MAISI autoencoder (tiny, built by the test): the frozen autoencoder of
a 3D and a 2D latent run; generate reads the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medsynth.models.init_source import resolve_init
from medsynth.train.config import TrainConfig

TINY_3D = dict(spatial_dims=3, block_out_channels=[8, 16], attention_levels=[False, True],
               norm_num_groups=4, attention_head_dim=8)


@pytest.fixture(scope="module")
def maisi3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.prior.components import build_tiny_maisi

    return build_tiny_maisi(tmp_path_factory.mktemp("maisi") / "bundle")


def test_maisi_bundle_resolves_and_keeps_its_weights(maisi3d: Path, tmp_path: Path) -> None:
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    from medsynth.models.autoencoder import load_autoencoder
    from medsynth.models.init_source import prepare_maisi
    from tests.prior.components import MAISI_KW

    src = resolve_init(str(maisi3d))
    assert src.kind == "monai-bundle" and src.licence == "Apache-2.0" and src.revision == "0.1"
    ae = load_autoencoder(prepare_maisi(src, tmp_path / "ae"))
    assert ae.record.kind == "monai-maisi" and ae.spec.spatial_dims == 3
    ref = AutoencoderKlMaisi(**MAISI_KW)
    ref.load_state_dict(torch.load(maisi3d / "models" / "autoencoder.pt", weights_only=True))
    x = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    with torch.no_grad():
        mu = ref.encode((x + 1) / 2)[0]  # MAISI's [0, 1] convention
    torch.testing.assert_close(ae.encode_mean(x), mu)


def test_maisi_latent_3d_run_and_generate(maisi3d: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medsynth.cli import app
    from medsynth.data.demo.common import DemoConfig, write_demo
    from medsynth.models.info import load_model_info
    from medsynth.train.loop import train

    ds = write_demo(DemoConfig(demo="prostate", out=str(tmp_path / "ds"), n_per_class=2, size=16,
                               seed=0, workers=1))
    m = train(ds.root, tmp_path / "m", cfg=TrainConfig.tiny(init=str(maisi3d), **TINY_3D),
              progress=False)
    info = load_model_info(m)
    assert info.autoencoder.kind == "monai-maisi" and info.autoencoder.latent_shape == [8, 8, 8]
    assert info.initialized_from.kind == "monai-bundle" and info.format == 3
    assert json.loads((m / "init_source.json").read_text())["kind"] == "monai-bundle"
    res = CliRunner().invoke(app, ["generate", str(m), "--out", str(tmp_path / "g"), "--n", "1",
                                   "--steps", "2", "--format", "nifti"])
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "g").rglob("*.nii.gz"))


def test_maisi_ct_window(maisi3d: Path) -> None:
    import numpy as np

    from medsynth.models.intensity import IntensityMapping
    from medsynth.train.prior import Prior

    prior = Prior(resolve_init(str(maisi3d)), TrainConfig(init=str(maisi3d)))

    class CT:
        modality, dtype = "CT", "int16"

    m = prior.intensity(IntensityMapping("int16", -2048, 3000), CT())
    x = m.from_pixels(np.array([-3000, -1000, 0, 1000, 2500], dtype=np.int16))
    assert x.tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0]  # -> MAISI's [0, 1] by the autoencoder
