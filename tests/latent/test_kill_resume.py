"""kill -9 in each phase of a latent `medsynth train`, then --resume: the run finishes, and its
logs hold every step once (the interrupted steps after the last checkpoint are redone)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.latent.conftest import TINY_3D, tiny_latent


def _steps(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEDSYNTH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "medsynth.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_when(proc: subprocess.Popen[bytes], ready: object, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while not ready():  # type: ignore[operator]
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"train ended (rc {proc.returncode}) before the kill:\n{out}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # three processes: about a minute idle, several on the shared machine
def test_kill9_in_each_phase_then_resume(prostate16: dict[str, Path]) -> None:
    root = prostate16["root"]
    out = root / "killed"
    recipe = root / "kill.yaml"
    recipe.write_text(tiny_latent(**TINY_3D, ae_max_steps=400, ae_checkpoint_every=2,
                                  max_steps=400, checkpoint_every=2).to_yaml())
    args = [str(prostate16["ds"]), "--out", str(out), "--config", str(recipe)]
    ae_ck = out / "checkpoints" / "autoencoder"
    ldm_ck = out / "checkpoints"

    def has(folder: Path, n: int) -> bool:
        """A complete checkpoint of step >= n in ``folder``."""
        return any(int(p.name[5:]) >= n for p in folder.glob("step-*")
                   if (p / "state.json").is_file())

    # 1. killed in the autoencoder phase, after its second checkpoint (step 4)
    _kill_when(_start(args), lambda: has(ae_ck, 4))
    assert not (out / "autoencoder").exists() and not (out / "medsynth.json").exists()
    # 2. resumed with fewer autoencoder steps (allowed: run length), killed in the denoiser phase
    short = root / "kill_short.yaml"
    short.write_text(tiny_latent(**TINY_3D, ae_max_steps=8, ae_checkpoint_every=2,
                                 max_steps=400, checkpoint_every=2).to_yaml())
    args_short = [*args[:-1], str(short)]
    _kill_when(_start([*args_short, "--resume"]), lambda: has(ldm_ck, 2))
    assert (out / "autoencoder" / "config.json").is_file()
    assert not (out / "medsynth.json").exists()
    # 3. resumed to the end (a shorter denoiser run)
    final = root / "kill_final.yaml"
    final.write_text(tiny_latent(**TINY_3D, ae_max_steps=8, ae_checkpoint_every=2,
                                 max_steps=6, checkpoint_every=2).to_yaml())
    proc = subprocess.run([sys.executable, "-m", "medsynth.cli", "train", *args[:-1], str(final),
                           "--resume"], capture_output=True, text=True,
                          env={**os.environ, "MEDSYNTH_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "medsynth.json").is_file()
    assert _steps(out / "autoencoder_log.csv") == list(range(1, 9))
    assert _steps(out / "train_log.csv") == list(range(1, 7))
