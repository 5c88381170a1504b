"""The reproducibility contract (docs/generate.md, "Reproducibility"), at 1 and 2 threads.

The same seed gives bitwise the same image again at the same thread count and device; at
another thread count it agrees within :data:`medsynth.threads.TOLERANCE` of the value range.
samples.csv records the threads and device, enough to remake an image bitwise in-process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.threads import TOLERANCE, torch_threads

runner = CliRunner()
ARGS = ["--class", "pneumonia", "--n", "2", "--steps", "3", "--sampler", "ddim",
        "--batch-size", "1", "--guidance", "3", "--format", "png"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.generate.conftest import make_model

    return make_model(tmp_path_factory.mktemp("repro"), classes=["normal", "pneumonia"],
                      channels=1, dtype="uint16", modality="DX", size=32)


def _generate(model: Path, out: Path, threads: int) -> pd.DataFrame:
    r = runner.invoke(app, ["generate", str(model), "--out", str(out), *ARGS,
                            "--threads", str(threads)])
    assert r.exit_code == 0, r.output
    return pd.read_csv(out / "samples.csv", keep_default_na=False)


def _pngs(out: Path, table: pd.DataFrame) -> list[bytes]:
    return [(out / p).read_bytes() for p in table["png"]]


def _sample(model: Path, threads: int, sampler: str, steps: int) -> torch.Tensor:
    from medsynth.models.bundle import load_bundle
    from medsynth.models.sampler import denoise

    b = load_bundle(model)
    with torch_threads(threads):
        h, m = b.encode_text(["patchy opacity, right lower zone"], classes=[1])
        nh, nm = b.encode_text([""])
        return denoise(b.denoiser, b.make_scheduler(sampler), class_ids=[1, 1],
                       text_hidden=h.repeat(2, 1, 1), text_mask=m.repeat(2, 1),
                       null_class=b.null_class, null_hidden=nh, null_mask=nm, seeds=[3, 4],
                       sample_shape=b.sample_shape, steps=steps, guidance=3.0)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_threads_is_bitwise_and_recorded(model: Path, tmp_path: Path,
                                                        threads: int) -> None:
    import json

    a = _generate(model, tmp_path / "a", threads)
    b = _generate(model, tmp_path / "b", threads)
    assert (a["threads"] == threads).all() and (a["device"] == "cpu").all()
    assert _pngs(tmp_path / "a", a) == _pngs(tmp_path / "b", b)
    rep = json.loads((tmp_path / "a" / "medsynth.json").read_text())["outputs"]["reproducibility"]
    assert rep["threads"] == [threads] and rep["devices"] == ["cpu"] and rep["torch"]


@pytest.mark.parametrize("threads", [1, 2])
def test_cli_image_remade_in_process_at_its_recorded_threads(model: Path, tmp_path: Path,
                                                             threads: int) -> None:
    """What samples.csv records (seed, sampler, steps, guidance, threads, batch) remakes the
    image bitwise, whatever thread count the calling process has."""
    from PIL import Image

    from medsynth.models.bundle import load_bundle
    from medsynth.models.sampler import denoise

    t = _generate(model, tmp_path / "s", threads)
    row = t.iloc[1]
    assert row["batch"] == 1  # --batch-size 1: the image was sampled alone, as here
    b = load_bundle(model)
    torch.set_num_threads(3 - threads)  # the test process at the other count
    with torch_threads(int(row["threads"])):
        h, m = b.encode_text([row["description"]], classes=[int(row["class_id"])])
        nh, nm = b.encode_text([""])
        x = denoise(b.denoiser, b.make_scheduler(row["sampler"]),
                    class_ids=[int(row["class_id"])], text_hidden=h, text_mask=m,
                    null_class=b.null_class, null_hidden=nh, null_mask=nm,
                    seeds=[int(row["seed"])], sample_shape=b.sample_shape,
                    steps=int(row["steps"]), guidance=float(row["guidance"]))
    png = np.asarray(Image.open(tmp_path / "s" / row["png"]))
    np.testing.assert_array_equal(b.to_pixels(x)[0][0], png)


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
def test_threads_1_vs_2_within_the_stated_tolerance(model: Path, sampler: str) -> None:
    one = _sample(model, 1, sampler, 3)
    assert torch.equal(one, _sample(model, 1, sampler, 3))
    two = _sample(model, 2, sampler, 3)
    assert torch.equal(two, _sample(model, 2, sampler, 3))
    assert float((one - two).abs().max()) <= TOLERANCE
