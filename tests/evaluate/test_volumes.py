"""Evaluate for volumes on prostate phantoms: 3D classifier benchmark, 2.5D FID with the
real-vs-real reference, 3D nearest-neighbour privacy, orthogonal-slice grids in the report.

The "generated" sets are phantom volumes written through the synthetic-set contract
(:mod:`medsynth.synthset`, a stage-generate manifest pointing at a stage-train model folder):
``fresh`` are new phantoms (another seed: plausible, not copies), ``copies`` are the real
training volumes themselves (a memorising generator), ``noise`` are noise volumes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medsynth.artifacts import input_ref, write_manifest
from medsynth.data.demo import prostate
from medsynth.data.demo.common import DemoConfig, write_demo
from medsynth.evaluate.config import EvaluateConfig
from medsynth.evaluate.run import run_evaluate
from medsynth.imaging.save import save_nifti
from medsynth.synthset import write_samples
from tests.evaluate.conftest import make_model

SIZE = 24


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vol") / "real"
    write_demo(DemoConfig("prostate", str(out), n_per_class=10, size=SIZE, seed=5,
                          val_fraction=0.2, test_fraction=0.3))
    return out


def _synthetic(root: Path, real: Path, model: Path, mode: str, n_per_class: int = 4) -> Path:
    from medsynth.imaging.dataset import open_dataset

    ds = open_dataset(real)
    rows = []
    for ci, cls in enumerate(prostate.CLASSES):
        train = ds.table[(ds.table["class"] == cls) & (ds.table["split"] == "train")]
        for i in range(n_per_class):
            if mode == "copies":
                img = ds.load(train.iloc[i % len(train)])
                arr, aff = img.array, img.affine
            elif mode == "noise":
                rng = np.random.default_rng(100 + 10 * ci + i)
                arr = rng.integers(0, 1500, (1, SIZE, SIZE, SIZE)).astype(np.uint16)
                aff = prostate.affine(SIZE)
            else:
                arr, _ = prostate.render(cls, i, SIZE, seed=99)
                aff = prostate.affine(SIZE)
            sid = f"{cls}-{i:06d}"
            rel = f"nifti/{cls}/{sid}.nii.gz"
            save_nifti(arr, root / rel, affine=aff)
            rows.append({"sample_id": sid, "class": cls, "nifti": rel, "index": i,
                         "class_id": ci, "seed": i, "description": ""})
    write_samples(root, rows)
    write_manifest(root, "generate", config={"model": str(model)},
                   inputs=[input_ref(model, "train")],
                   outputs={"n_images": len(rows), "channels": 1, "dtype": "uint16",
                            "modality": "MR", "spatial_dims": 3, "synthetic": True,
                            "samples": "samples.csv"})
    return root


@pytest.fixture(scope="module")
def report(real: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("volsets")
    model = make_model(tmp / "model", real)
    sets = [_synthetic(tmp / name, real, model, name) for name in ("fresh", "copies", "noise")]
    cfg = EvaluateConfig(real=real, synthetic=sets, out=tmp / "report", seeds=2,
                         real_fractions=["1.0"], epochs=4, patience=2, batch_size=8,
                         feature_size=64, msssim_pairs=4, n_pairs=3, threads=2)
    run_evaluate(cfg)
    return tmp / "report", json.loads((tmp / "report" / "metrics.json").read_text())


def test_volume_report_runs_the_3d_benchmark(report) -> None:  # type: ignore[no-untyped-def]
    out, m = report
    assert m["real"]["image_size"] == SIZE
    arms = {(a["setting"], a["fraction"]) for a in m["benchmark"]["arms"]}
    assert ("real", "1.0") in arms and ("real+fresh", "1.0") in arms and ("fresh", "-") in arms \
        or any(s == "fresh" for s, _ in arms)
    for a in m["benchmark"]["arms"]:
        assert 0.0 <= a["metrics"]["balanced_accuracy"]["mean"] <= 1.0
    assert (out / "classifiers").is_dir() and (out / "report.html").is_file()


def test_2_5d_fid_orders_the_sets_and_has_a_reference(report) -> None:  # type: ignore[no-untyped-def]
    _, m = report
    f = m["volumes"]["fid_2_5d"]
    ref = f["reference"]
    assert set(ref) >= {"axial", "coronal", "sagittal", "mean"}
    assert ref["mean"] == pytest.approx(np.mean([ref[p] for p in ("axial", "coronal", "sagittal")]))
    fresh, copies, noise = (f["sets"][n]["mean"] for n in ("fresh", "copies", "noise"))
    # plausible phantoms are far closer to the real test volumes than noise is
    assert fresh < 0.5 * noise and copies < 0.5 * noise
    assert m["fidelity"]["feature_extractor"]["name"].startswith("2.5D")


def test_3d_privacy_flags_copies(report) -> None:  # type: ignore[no-untyped-def]
    _, m = report
    p = m["privacy"]["sets"]
    assert p["copies"]["pixel"]["near_copy_share"] == 1.0
    assert p["copies"]["pixel"]["synth_min_nn"] == pytest.approx(0.0, abs=1e-6)
    assert p["fresh"]["pixel"]["near_copy_share"] <= 0.25
    assert p["copies"]["feature"]["synth_median_nn"] < p["fresh"]["feature"]["synth_median_nn"]


def test_report_has_orthogonal_slice_grids(report) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    out, _ = report
    page = (out / "report.html").read_text()
    assert 'id="volumes"' in page and "FID mean (2.5D)" in page and "axial | coronal" in page
    grid = Image.open(out / "plots" / "grid_fresh.png")
    assert grid.width > grid.height  # three planes per volume, side by side


def test_2d_set_against_volumes_and_oracle_are_refused_before_writing(
        real: Path, tmp_path: Path) -> None:
    from medsynth.errors import MedsynthError

    model = make_model(tmp_path / "model", real)
    flat = _synthetic(tmp_path / "flat", real, model, "fresh", n_per_class=1)
    man = json.loads((flat / "medsynth.json").read_text())
    man["outputs"]["spatial_dims"] = 2  # a 2D synthetic set (its manifest says so)
    (flat / "medsynth.json").write_text(json.dumps(man))
    with pytest.raises(MedsynthError, match="2D images, but .* has 3D"):
        run_evaluate(EvaluateConfig(real=real, synthetic=[flat], out=tmp_path / "r1"))
    ok = _synthetic(tmp_path / "ok", real, model, "fresh", n_per_class=1)
    with pytest.raises(MedsynthError, match="--extra-real .* 2D datasets only"):
        run_evaluate(EvaluateConfig(real=real, synthetic=[ok], out=tmp_path / "r2",
                                    extra_real=real))
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_two_fids_of_volumes_are_labelled_in_console_and_report(report, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The fidelity table's FID over concatenated plane features is not the documented 2.5D
    FID: both are shown, each named, in the console and the report."""
    from rich.console import Console

    from medsynth import ui
    from medsynth.evaluate.html_report import print_summary
    from medsynth.evaluate.volumes import CONCAT_FID

    out, m = report
    assert m["fidelity"]["fid_label"] == CONCAT_FID
    con = Console(width=250, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    monkeypatch.setattr(ui, "out", con)
    print_summary(m)
    text = con.export_text()
    assert CONCAT_FID in text and "FID 2.5D (mean of planes)" in text
    fresh = m["volumes"]["fid_2_5d"]["sets"]["fresh"]["mean"]
    assert f"{fresh:.1f}" in text
    page = (out / "report.html").read_text()
    assert CONCAT_FID in page and "FID mean (2.5D)" in page
