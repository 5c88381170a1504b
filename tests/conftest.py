"""Shared fixtures: tiny datasets made on the spot, paths of real files shipped by packages."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MEDSYNTH_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the shared training-data cache (train/data.py data_cache: disk) never in the user's home
if "MEDSYNTH_CACHE" not in os.environ:  # one per run, removed at exit (no debris in /tmp)
    import atexit
    import shutil

    os.environ["MEDSYNTH_CACHE"] = tempfile.mkdtemp(prefix="medsynth-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MEDSYNTH_CACHE"], ignore_errors=True)
# Help drawn in-process at the piped width whatever terminal runs pytest (cli.py keeps a
# terminal's own width; tests/test_cli.py checks 80 columns in a subprocess).
os.environ.setdefault("TERMINAL_WIDTH", "100")
# One fixed torch thread count for the whole suite, in this process and in every CLI call and
# subprocess: float sums depend on the thread count, and medsynth's default follows the free
# cores (the machine's load). Same threads on both sides = bitwise the same images
# (docs/generate.md, "Reproducibility"); MEDSYNTH_THREADS=N runs the suite at N.
TEST_THREADS = os.environ.setdefault("MEDSYNTH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", TEST_THREADS)


@pytest.fixture(autouse=True)
def _pinned_threads() -> None:
    """Every test starts at the suite's thread count (a test that changed it cannot leak)."""
    import torch

    torch.set_num_threads(int(TEST_THREADS))


def _site_packages() -> Path:
    import pydicom

    return Path(pydicom.__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pydicom_data_dir() -> Path:
    """Real clinical DICOM files shipped by the PyPI package pydicom-data."""
    d = _site_packages() / "data_store" / "data"
    if not d.is_dir():
        pytest.skip("pydicom-data is not installed")
    return d


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA (model + processor) saved on the spot (tests/describe/tiny_vlm.py)."""
    from tests.describe.tiny_vlm import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("vlm") / "tiny-llava")


@pytest.fixture(scope="session")
def mni_t1() -> Path:
    """The real MNI152 T1 brain volume shipped by nilearn."""
    p = _site_packages() / "nilearn" / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not p.is_file():
        pytest.skip("nilearn is not installed")
    return p


def write_png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/<class>/*.png: two RGB classes (red discs, blue squares), 6 images each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for cls, ch in (("disc", 0), ("square", 2)):
        for i in range(6):
            arr = rng.integers(0, 40, (20, 24, 3), dtype=np.uint8)
            arr[5:15, 6:18, ch] = 200
            write_png(root / cls / f"img{i}.png", arr)
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.gpu`` tests skip cleanly without CUDA (scripts/gpu-check.sh runs them)."""
    # the marker itself: "gpu" in item.keywords also matches a folder named gpu
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available() or os.environ.get("MEDSYNTH_GPU_DRY_RUN"):
        return  # the dry run (scripts/gpu-check.sh --dry-run) runs them on the CPU
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu-check.sh on one)")
    for item in gpu:
        item.add_marker(skip)
