"""`medsynth train` under `accelerate launch --num_processes 2` on the CPU (gloo).

Two processes with batch size B and no accumulation draw exactly the micro-batches of one process
with B and ``grad_accum: 2`` (the batch of micro-step k is seeded by k = step x micro-steps +
process), and DDP's gradient average equals the accumulated mean: the models must match. Every
stage that writes (the recipe, the caches, the autoencoder folder, checkpoints, the model) must
do so once, with no debris, and no stage may do its work once per process.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest

from medsynth.train.config import TrainConfig
from medsynth.train.loop import train
from tests.latent.conftest import TINY_3D, tiny_latent
from tests.multiproc.helpers import assert_same_weights, debris, launch, popen


def _recipe(path: Path, cfg: TrainConfig) -> Path:
    path.write_text(cfg.to_yaml())
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _once(log: str, text: str) -> None:
    assert log.count(text) == 1, f"{text!r} {log.count(text)} times in:\n{log[-3000:]}"


def _check_folder(out: Path, steps: int) -> None:
    assert not debris(out), debris(out)
    assert [int(r["step"]) for r in _rows(out / "train_log.csv")] == list(range(1, steps + 1))
    m = json.loads((out / "medsynth.json").read_text())
    assert m["outputs"]["processes"] == 2


def test_two_processes_train_the_one_process_model(rgb16: dict[str, Path], tmp_path: Path) -> None:
    """Pixel training: 2 processes (grad_accum 1) = 1 process (grad_accum 2), files once."""
    cfg = TrainConfig.tiny(max_steps=3, batch_size=2, checkpoint_every=2, lr_schedule="constant")
    one = tmp_path / "one"
    train(rgb16["ds"], one, cfg=cfg.replace(grad_accum=2), store_path=rgb16["store"],
          progress=False)
    two = tmp_path / "two"
    r = launch("train", rgb16["ds"], "--out", two, "--store", rgb16["store"], "--config",
               _recipe(tmp_path / "r.yaml", cfg))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert_same_weights(one, two)
    _check_folder(two, 3)
    _once(log, "model written to")
    _once(log, "distinct descriptions")  # the text features: encoded by the main process only
    ck = sorted(p.name for p in (two / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert ck == ["step-0000002", "step-0000003"]
    for c in ck:  # both ranks' RNG states are in every checkpoint (renamed after the barrier)
        names = {p.name for p in (two / "checkpoints" / c).iterdir()}
        assert {"random_states_0.pkl", "random_states_1.pkl", "state.json"} <= names, names


def test_clip_stage_refuses_several_processes(rgb16: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "clip"
    r = launch("train", rgb16["ds"], "--out", out, "--store", rgb16["store"], "--stage", "clip",
               "--max-steps", "1")
    assert r.returncode != 0
    err = [line for line in r.stderr.splitlines() if "runs in one process" in line]
    assert err and "2 processes" in err[0], r.stderr[-2000:]
    assert not [line for line in r.stderr.splitlines() if "medsynth/train" in line]  # no trace
    assert not out.exists()


def _latent_checks(out: Path, log: str, *, ae_steps: int, steps: int) -> None:
    _check_folder(out, steps)
    _once(log, "encoding the latents of")  # the latent cache: encoded once, by the main process
    _once(log, "autoencoder: latent")
    _once(log, "model written to")
    assert [int(r["step"]) for r in _rows(out / "autoencoder_log.csv")] == \
        list(range(1, ae_steps + 1))
    assert len(list((out / "checkpoints" / "cache").glob("latents_*.safetensors"))) == 1
    from medsynth.models.bundle import load_bundle

    assert load_bundle(out).info.autoencoder is not None


@pytest.mark.slow
def test_latent_2d_two_processes(rgb16: dict[str, Path], tmp_path: Path) -> None:
    """The autoencoder phase (with the adversarial loss: DDP on the discriminator) in 2 ranks."""
    cfg = tiny_latent(max_steps=2, ae_adv_weight=0.1, ae_adv_start=1)
    out = tmp_path / "lat2"
    r = launch("train", rgb16["ds"], "--out", out, "--store", rgb16["store"], "--config",
               _recipe(tmp_path / "r.yaml", cfg))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    _latent_checks(out, log, ae_steps=cfg.ae_max_steps, steps=2)
    # A reused autoencoder: copied once (through one .part folder), latents encoded once.
    reuse = tmp_path / "reuse"
    r = launch("train", rgb16["ds"], "--out", reuse, "--store", rgb16["store"], "--config",
               _recipe(tmp_path / "r2.yaml", cfg), "--autoencoder", out / "autoencoder")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    _once(log, "autoencoder: reusing")
    _once(log, "encoding the latents of")
    assert not debris(reuse)


@pytest.mark.slow
def test_latent_3d_two_processes(prostate16: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_latent(max_steps=2, **TINY_3D)
    out = tmp_path / "lat3"
    r = launch("train", prostate16["ds"], "--out", out, "--store", prostate16["store"],
               "--config", _recipe(tmp_path / "r.yaml", cfg))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    _latent_checks(out, log, ae_steps=cfg.ae_max_steps, steps=2)


@pytest.mark.slow
def test_two_processes_resume_after_a_kill(rgb16: dict[str, Path], tmp_path: Path) -> None:
    """Killed (SIGKILL to both ranks) after a checkpoint, resumed: the uninterrupted model."""
    cfg = TrainConfig.tiny(max_steps=10, batch_size=2, checkpoint_every=2, lr_schedule="constant")
    one = tmp_path / "one"
    train(rgb16["ds"], one, cfg=cfg.replace(grad_accum=2), store_path=rgb16["store"],
          progress=False)
    two = tmp_path / "two"
    recipe = _recipe(tmp_path / "r.yaml", cfg)
    proc = popen("train", rgb16["ds"], "--out", two, "--store", rgb16["store"], "--config", recipe)
    first = two / "checkpoints" / "step-0000002" / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (two / "medsynth.json").exists()
    r = launch("train", rgb16["ds"], "--out", two, "--store", rgb16["store"], "--config", recipe,
               "--resume")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "resumed from" in log  # every rank loads its own state (its RNG) from the checkpoint
    assert_same_weights(one, two)
    _check_folder(two, 10)
