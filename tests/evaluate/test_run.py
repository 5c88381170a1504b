"""End to end: ``medsynth evaluate`` on a tiny dataset; resume; the report in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth.artifacts import read_jsonl, read_manifest
from medsynth.cli import app

ARGS = ["--seeds", "2", "--real-fraction", "1.0,4", "--epochs", "3", "--patience", "2",
        "--feature-size", "64", "--size", "32"]


@pytest.fixture(scope="module")
def report(shapes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evaluate_run") / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(out),
                                   *ARGS])
    assert res.exit_code == 0, res.output
    return out


def test_report_folder_follows_contract(report: Path, shapes: dict[str, Path]) -> None:
    m = read_manifest(report, "evaluate")
    assert [i["stage"] for i in m.inputs] == ["data", "generate"]
    metrics = json.loads((report / "metrics.json").read_text())
    arms = {(a["setting"], a["fraction"]): a for a in metrics["benchmark"]["arms"]}
    # real / real+synth at two fractions, plus the synthetic-only arm.
    assert set(arms) == {("real", "1.0"), ("real+synth", "1.0"), ("real", "4/class"),
                         ("real+synth", "4/class"), ("synth", "none")}
    assert arms[("real", "4/class")]["n_real"] == 12
    assert arms[("real+synth", "4/class")]["n_synthetic"] == 36
    for a in arms.values():
        assert a["n_runs"] == 2
        ba = a["metrics"]["balanced_accuracy"]
        assert 0 <= ba["mean"] <= 1 and len(ba["values"]) == 2
    assert "verdict" in arms[("real+synth", "1.0")]
    assert len(list((report / "predictions").glob("*.csv"))) == 10
    # Fidelity: every figure has its real-vs-real reference.
    fid = metrics["fidelity"]
    assert fid["reference"]["overall"]["fid"] > 0
    assert set(fid["sets"]["synth"]["per_class"]) == {"disc", "ring", "square"}
    assert fid["sets"]["synth"]["overall"]["fid"] > 0
    # The shapes are easy: a real-trained classifier recognises the perturbed copies.
    assert fid["sets"]["synth"]["class_fidelity"]["overall"] > 0.6
    assert metrics["privacy"]["sets"]["synth"]["pixel"]["near_copy_share"] < 0.5
    assert metrics["adherence"]["applies"] is False  # shapes have no demo attributes
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 7 and "src=\"plots/" not in html
    assert "no clear effect" in html or "helps" in html or "hurts" in html


def test_resume_skips_finished_runs(report: Path, shapes: dict[str, Path]) -> None:
    runs = read_jsonl(report / "runs.jsonl")
    stamp = (report / "predictions" / f"{runs[0]['key']}.csv").stat().st_mtime_ns
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(report),
                                   *ARGS, "--resume"])
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(report / "runs.jsonl")) == len(runs)
    assert (report / "predictions" / f"{runs[0]['key']}.csv").stat().st_mtime_ns == stamp
    # A resume with other settings is refused, and so is a plain rerun into the folder.
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(report), *ARGS,
                                   "--epochs", "4", "--resume"])
    assert res.exit_code == 1 and "other settings (epochs)" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(report), *ARGS])
    assert res.exit_code == 1 and "already exists" in res.output


def test_leaking_set_is_refused_before_writing(tmp_path: Path, shapes: dict[str, Path]) -> None:
    from .conftest import make_model, make_synthetic

    model = make_model(tmp_path / "m", shapes["data"], ["train", "val", "test"])
    synth = make_synthetic(tmp_path / "s", shapes["data"], model, n_per_class=2)
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(synth), "--out", str(out), *ARGS])
    assert res.exit_code == 1 and "test split" in res.output
    assert not out.exists()


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    # Copy the report alone: it must not need its plots/ folder.
    page = tmp_path / "report.html"
    shutil.copy(report / "report.html", page)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1300,2400", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    im = Image.open(shot).convert("RGB")
    assert im.size == (1300, 2400)
    # The page rendered: the dark header band and many distinct colours (plots, images).
    assert im.getpixel((20, 20))[2] < 120
    assert len(im.resize((260, 480)).getcolors(1 << 16) or []) > 500


def test_gray16_without_benchmark(tmp_path: Path) -> None:
    """16-bit grayscale stays one channel (3 only inside the feature extractor); --no-benchmark."""
    from .conftest import make_dataset, make_model, make_synthetic

    data = make_dataset(tmp_path / "gray", n_per_class=12, gray16=True)
    synth = make_synthetic(tmp_path / "s", data, make_model(tmp_path / "m", data), n_per_class=6)
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(data), "--synthetic", str(synth),
                                   "--out", str(out), "--no-benchmark", "--epochs", "2",
                                   "--feature-size", "32"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["benchmark"] is None and metrics["real"]["channels"] == 1
    assert metrics["fidelity"]["sets"]["s"]["overall"]["fid"] is not None
    # Class fidelity still works: the reference classifier is trained on its own.
    assert (out / "classifiers" / "real-full-seed0.pt").is_file()
    assert "Skipped (--no-benchmark)" in (out / "report.html").read_text()
