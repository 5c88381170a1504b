"""scripts/install.sh picks the PyTorch index from the driver (a fake nvidia-smi), installs nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _index(tmp_path: Path, cuda: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if cuda is not None:
        smi.write_text("#!/bin/sh\n[ \"$1\" = -L ] && { echo 'GPU 0: NVIDIA H100 (UUID: x)'; exit 0; }\n"
                       f"echo '| NVIDIA-SMI 570.1   Driver Version: 570.1   CUDA Version: {cuda} |'\n")
        smi.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    return subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--print-torch-index"],
                          capture_output=True, text=True, env={**os.environ, "PATH": path, **env},
                          timeout=60)


@pytest.mark.parametrize("cuda,tag", [("12.4", "cu124"), ("12.5", "cu124"), ("12.8", "cu128"),
                                      ("13.2", "cu130"), ("11.8", "cu118")])
def test_index_follows_the_driver(tmp_path: Path, cuda: str, tag: str) -> None:
    r = _index(tmp_path, cuda)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"https://download.pytorch.org/whl/{tag}"


def test_override_no_gpu_and_old_driver(tmp_path: Path) -> None:
    r = _index(tmp_path, "12.4", MEDSYNTH_TORCH_INDEX_URL="https://mirror.example/whl/cu126")
    assert r.stdout.strip() == "https://mirror.example/whl/cu126"
    assert _index(tmp_path / "none", None).stdout.strip() == "cpu"
    old = _index(tmp_path / "old", "11.4")
    assert old.returncode != 0 and "older than any PyTorch build" in old.stderr
