"""CCELLA mode (class predicted from the text) and the rectified-flow sampler."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import MedsynthError
from medsynth.models.bundle import load_bundle
from medsynth.models.ccella import (
    TextClassHead,
    class_inputs,
    class_loss,
    pool_text,
    sampling_class_input,
)
from medsynth.models.rflow import RectifiedFlowScheduler, rflow_config
from medsynth.models.sampler import denoise, make_scheduler
from medsynth.train.loop import train
from tests.latent.conftest import tiny_latent


def test_class_inputs_follow_text_labels_and_dropout() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]])
    labels = torch.tensor([0, 1, 2, 0])
    has_text = torch.tensor([True, False, True, True])
    drop = torch.tensor([False, False, False, True])
    c = class_inputs(probs, labels, has_text, drop, null_class=3)
    assert c.shape == (4, 4)
    torch.testing.assert_close(c[0], torch.tensor([0.7, 0.2, 0.1, 0.0]))  # from the text
    torch.testing.assert_close(c[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))  # no text: one-hot
    torch.testing.assert_close(c[2], torch.tensor([0.3, 0.3, 0.4, 0.0]))
    torch.testing.assert_close(c[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))  # dropped: null


def test_focal_and_ce_class_loss() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, -1.0]])
    y = torch.tensor([0, 1, 2])
    ce = F.cross_entropy(logits, y, reduction="none")
    p = torch.exp(-ce)
    torch.testing.assert_close(class_loss(logits, y, "ce"), ce.mean())
    torch.testing.assert_close(class_loss(logits, y, "focal"), ((1 - p) ** 2 * ce).mean())
    # rows without a report do not count; none at all -> 0
    w = torch.tensor([True, False, True])
    torch.testing.assert_close(class_loss(logits, y, "ce", weights=w), ce[[0, 2]].mean())
    assert float(class_loss(logits, y, "focal", weights=torch.zeros(3, dtype=torch.bool))) == 0
    # focal down-weights the confident, correct row most
    assert (1 - p[0]) ** 2 < (1 - p[2]) ** 2


def test_text_head_pools_real_tokens_only() -> None:
    head = TextClassHead(6, 3)
    h = torch.randn(2, 5, 6)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    padded = h.clone()
    padded[0, 3:] = 99.0  # padding must not change the prediction
    torch.testing.assert_close(head(h, m)[0], head(padded, m)[0])
    torch.testing.assert_close(pool_text(h, m)[0], h[0, :3].mean(0))
    probs = sampling_class_input(head, [2, 0], h, m, 3, source=["class", "text"])
    torch.testing.assert_close(probs[0], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(probs[1], head(h, m)[1].softmax(-1), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def ccella_model(rgb16: dict[str, Path]) -> Path:
    cfg = tiny_latent(ccella=True, ccella_loss="focal", ccella_loss_weight=0.5, max_steps=4,
                      ccella_temperature=0.5)
    return train(rgb16["ds"], rgb16["root"] / "ccella", cfg=cfg, store_path=rgb16["store"],
                 progress=False)


def test_ccella_training_logs_the_text_class_loss(ccella_model: Path) -> None:
    with open(ccella_model / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["text_class"]) > 0 for r in rows)
    # loss = mse + class_loss_weight * class_ce + ccella_loss_weight * text_class
    for r in rows:
        assert float(r["loss"]) == pytest.approx(
            float(r["mse"]) + 0.1 * float(r["class_ce"]) + 0.5 * float(r["text_class"]),
            rel=1e-4)
    b = load_bundle(ccella_model)
    assert b.class_probabilities and b.info.conditioning.temperature == 0.5
    assert (ccella_model / "text_class_head.safetensors").is_file()


def test_ccella_class_probabilities_condition_the_denoiser(ccella_model: Path) -> None:
    b = load_bundle(ccella_model)
    h, m = b.encode_text(["a round dark red lesion on a dark background"], classes=[0])
    one_hot = b.class_condition([1], h, m, ["class"])
    torch.testing.assert_close(one_hot, torch.tensor([[0.0, 1.0]]))
    text = b.class_condition([1], h, m, ["text"])
    head = b.text_class_head()
    torch.testing.assert_close(text, (head(h, m) / 0.5).softmax(-1), rtol=1e-5, atol=1e-6)
    # one-hot probabilities are exactly the class id's embedding; other probabilities differ
    x = torch.randn(1, *b.sample_shape)
    with torch.no_grad():
        by_id = b.denoiser(x, 500, torch.tensor([1]), h, m)
        by_prob = b.denoiser(x, 500, one_hot, h, m)
        by_text = b.denoiser(x, 500, torch.tensor([[0.5, 0.5]]), h, m)
    torch.testing.assert_close(by_prob, by_id, rtol=1e-5, atol=1e-6)
    assert float((by_text - by_id).abs().max()) > 1e-6


def test_ccella_generate_records_the_class_input(ccella_model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "s"
    r = runner.invoke(app, ["generate", str(ccella_model), "--out", str(out), "--n", "2",
                            "--steps", "2", "--sampler", "ddim", "--class-input", "text"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert table["class_input"].str.startswith("text:").all()
    probs = np.array([[float(v) for v in s[5:].split(",")] for s in table["class_input"]])
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1.0, atol=2e-3)
    out2 = tmp_path / "s2"
    r = runner.invoke(app, ["generate", str(ccella_model), "--out", str(out2), "--n", "1",
                            "--steps", "2", "--class-input", "class", "--prompt", ""])
    assert r.exit_code == 0, r.output
    assert set(pd.read_csv(out2 / "samples.csv")["class_input"]) == {"class"}


def test_class_input_option_needs_a_ccella_model(rgb16: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    model = train(rgb16["ds"], tmp_path / "plain", cfg=tiny_latent(max_steps=1),
                  store_path=rgb16["store"], progress=False)
    r = runner.invoke(app, ["generate", str(model), "--out", str(tmp_path / "o"), "--n", "1",
                            "--class-input", "text"])
    assert r.exit_code == 2 and "only for CCELLA-mode models" in r.output


class _Oracle(torch.nn.Module):
    """A 'denoiser' that knows x0: returns the exact flow velocity of the straight path."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor, *_args: object) -> torch.Tensor:
        s = float(t) / 1000.0  # x_t = (1 - s) x0 + s noise  ->  v = x0 - noise = (x0 - x_t) / s
        return (self.x0.expand_as(x) - x) / s


def test_rflow_euler_steps_land_on_x0_with_the_true_velocity() -> None:
    x0 = torch.linspace(-0.9, 0.9, 2 * 4 * 4).reshape(1, 2, 4, 4)
    conf = rflow_config(1000, (2, 4, 4))
    sched = make_scheduler("rflow", conf, latent=True)
    assert isinstance(sched, RectifiedFlowScheduler)
    sched.set_timesteps(5)
    assert [int(t) for t in sched.timesteps] == [1000, 800, 600, 400, 200]
    x = denoise(_Oracle(x0), sched, class_ids=[0], text_hidden=torch.zeros(1, 1, 3),
                text_mask=torch.ones(1, 1, dtype=torch.long), null_class=1,
                null_hidden=torch.zeros(1, 1, 3), null_mask=torch.ones(1, 1, dtype=torch.long),
                seeds=[3], sample_shape=(2, 4, 4), steps=5, guidance=1.0)
    torch.testing.assert_close(x, x0, rtol=1e-5, atol=1e-5)
    # add_noise is the straight path
    n = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(sched.add_noise(x0, n, torch.tensor([250])), 0.75 * x0 + 0.25 * n)


def test_rflow_and_ddpm_samplers_do_not_mix() -> None:
    from diffusers import DDPMScheduler

    ddpm = dict(DDPMScheduler().config)
    with pytest.raises(MedsynthError, match="needs a model trained with rectified flow"):
        make_scheduler("rflow", ddpm)
    with pytest.raises(MedsynthError, match="sample it with rflow"):
        make_scheduler("ddim", rflow_config(1000, (4, 8, 8)))
