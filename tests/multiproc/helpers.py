"""`accelerate launch` on the CPU (gloo) for the multi-process tests, as the generate test does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ENV = {"MEDSYNTH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1"}


def accelerate_cmd(n: int = 2) -> list[str]:
    acc = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    return [acc, "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "medsynth.cli"]


def launch(*args: object, n: int = 2, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``medsynth ARGS`` in ``n`` processes (gloo on the CPU); stdout+stderr of all ranks."""
    env = {**os.environ, **ENV}
    return subprocess.run([*accelerate_cmd(n), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def popen(*args: object, n: int = 2) -> subprocess.Popen[str]:
    env = {**os.environ, **ENV}
    return subprocess.Popen([*accelerate_cmd(n), *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def safetensors_of(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every safetensors file under ``folder`` (checkpoints left out) by relative path."""
    from safetensors.numpy import load_file

    return {str(p.relative_to(folder)): load_file(str(p)) for p in sorted(folder.rglob(
        "*.safetensors")) if "checkpoints" not in p.relative_to(folder).parts}


def assert_same_weights(a: Path, b: Path, *, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    wa, wb = safetensors_of(a), safetensors_of(b)
    assert wa.keys() == wb.keys() and wa
    for f in wa:
        assert wa[f].keys() == wb[f].keys(), f
        for k in wa[f]:
            np.testing.assert_allclose(wa[f][k], wb[f][k], rtol=rtol, atol=atol,
                                       err_msg=f"{f}:{k}")


def debris(folder: Path) -> list[Path]:
    """Temporary files and folders a run must not leave."""
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".old"))
            or p.name.startswith(".") and p.name != ".journal"]
