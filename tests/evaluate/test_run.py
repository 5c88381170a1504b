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
        "--feature-size", "64", "--size", "32", "--bootstrap", "300"]


def _baselines(shapes: dict[str, Path]) -> list[str]:
    return ["--baselines", "augment,oracle", "--extra-real", str(shapes["extra"])]


@pytest.fixture(scope="module")
def report(shapes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evaluate_run") / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(out),
                                   *_baselines(shapes), *ARGS])
    assert res.exit_code == 0, res.output
    # The shapes fixture has 7-8 test images per class: flagged in the terminal.
    assert "test images (< 30)" in res.output
    assert "Smallest gain in balanced accuracy this set-up detects" in res.output
    return out


def test_report_folder_follows_contract(report: Path, shapes: dict[str, Path]) -> None:
    m = read_manifest(report, "evaluate")
    assert [i["stage"] for i in m.inputs] == ["data", "generate", "data"]  # real, synth, extra
    assert m.inputs[2]["path"] == str(shapes["extra"].resolve())
    metrics = json.loads((report / "metrics.json").read_text())
    arms = {(a["setting"], a["fraction"]): a for a in metrics["benchmark"]["arms"]}
    # real / real+synth / augment / oracle at two fractions, plus the synthetic-only arm.
    assert set(arms) == {(s, f) for s in ("real", "real+synth", "real+augment", "real+oracle")
                         for f in ("1.0", "4/class")} | {("synth", "none")}
    assert arms[("real", "4/class")]["n_real"] == 12
    assert arms[("real+synth", "4/class")]["n_synthetic"] == 36
    # Same budget: augment repeats the real images to the size of real+synth; the oracle adds
    # as many extra real images (12 per class wanted, the extra set has 15).
    for kind in ("real+synth", "real+augment", "real+oracle"):
        assert arms[(kind, "4/class")]["n_added"] == 36
        assert arms[(kind, "4/class")]["n_real"] == 12
    for a in arms.values():
        assert a["n_runs"] == 2
        ba = a["metrics"]["balanced_accuracy"]
        assert 0 <= ba["lo"] <= ba["mean"] <= ba["hi"] <= 1 and len(ba["values"]) == 2
        assert ba["seeds"]["n"] == 2  # the seed spread is kept beside the bootstrap interval
    a = arms[("real+synth", "1.0")]
    assert a["verdict"] in ("helps", "hurts", "no clear effect")
    g = a["gain"]["balanced_accuracy"]
    assert g["lo"] <= g["mean"] <= g["hi"]
    assert a["power"]["mde"] >= 2.8016 * g["se"] - 1e-9  # or the floor of 23 test images
    assert a["power"]["advice"]  # 23 test images cannot show 5 points
    assert "vs_augment" in a and "oracle_recovery" in a
    assert {"augment", "oracle"} == set(metrics["baselines"]["names"])
    assert metrics["baselines"]["extra_real"]["n_images"] == 45
    assert any("test images (< 30)" in w for w in metrics["warnings"])
    assert metrics["benchmark"]["bootstrap"]["replicates"] == 300
    assert len(list((report / "predictions").glob("*.csv"))) == 18
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
    assert "detectable" in html and "oracle gain" in html and "real+augment" in html
    assert "test images (&lt; 30)" in html


def test_resume_skips_finished_runs(report: Path, shapes: dict[str, Path]) -> None:
    runs = read_jsonl(report / "runs.jsonl")
    stamp = (report / "predictions" / f"{runs[0]['key']}.csv").stat().st_mtime_ns
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(report), *_baselines(shapes),
                                   *ARGS, "--resume"])
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(report / "runs.jsonl")) == len(runs)
    assert (report / "predictions" / f"{runs[0]['key']}.csv").stat().st_mtime_ns == stamp
    # A resume with other settings is refused, and so is a plain rerun into the folder.
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(report), *_baselines(shapes), *ARGS,
                                   "--epochs", "4", "--resume"])
    assert res.exit_code == 1 and "other settings: epochs (3 -> 4)" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(report), *_baselines(shapes), *ARGS])
    assert res.exit_code == 1 and "already exists" in res.output


def test_worker_processes_give_the_same_runs(report: Path, shapes: dict[str, Path],
                                             tmp_path: Path) -> None:
    """--workers 2: the runs go to two spawned processes; every figure and prediction is the
    one the single process wrote (each run is seeded on its own, at the same thread count)."""
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(out), *_baselines(shapes),
                                   *ARGS, "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "in 2 processes" in res.output

    def runs(folder: Path) -> dict[str, dict]:
        return {r["key"]: {k: v for k, v in r.items() if k != "seconds"}
                for r in read_jsonl(folder / "runs.jsonl")}

    one, two = runs(report), runs(out)
    assert len(one) > 4 and one == two
    for key in one:
        assert (out / "predictions" / f"{key}.csv").read_bytes() == \
            (report / "predictions" / f"{key}.csv").read_bytes(), key
    a = json.loads((report / "metrics.json").read_text())["benchmark"]
    b = json.loads((out / "metrics.json").read_text())["benchmark"]
    for x, y in zip(a["arms"], b["arms"], strict=True):
        assert x["metrics"] == y["metrics"] and x.get("gain") == y.get("gain")


def test_benchmark_workers_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth.evaluate.benchmark import benchmark_workers
    from medsynth.evaluate.config import EvaluateConfig

    cfg = EvaluateConfig(real="r", synthetic=["s"], out="o")
    assert benchmark_workers(cfg, "cuda", 1, 10) == 1  # one GPU: one process
    assert benchmark_workers(cfg, "cpu", 4, 10) == 1  # runs that take several threads
    assert benchmark_workers(cfg, "cpu", 1, 1) == 1
    assert benchmark_workers(cfg, "cpu", 1, 10) == 1  # the suite's MEDSYNTH_THREADS=1
    monkeypatch.delenv("MEDSYNTH_THREADS")
    from medsynth.threads import available_cpus

    assert benchmark_workers(cfg, "cpu", 1, 64) == min(available_cpus(), 64)
    assert benchmark_workers(cfg.model_copy(update={"workers": 3}), "cpu", 1, 10) == 3
    assert benchmark_workers(cfg.model_copy(update={"workers": 3}), "cpu", 1, 2) == 2


def test_leaking_set_is_refused_before_writing(tmp_path: Path, shapes: dict[str, Path]) -> None:
    from .conftest import make_model, make_synthetic

    model = make_model(tmp_path / "m", shapes["data"], ["train", "val", "test"])
    synth = make_synthetic(tmp_path / "s", shapes["data"], model, n_per_class=2)
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(synth), "--out", str(out), *ARGS])
    assert res.exit_code == 1 and "test split" in res.output
    assert not out.exists()


def test_one_class_test_split_is_refused(tmp_path: Path, shapes: dict[str, Path]) -> None:
    from medsynth.imaging.dataset import finish_dataset, open_dataset

    from .conftest import make_dataset

    data = make_dataset(tmp_path / "data", n_per_class=10)
    ds = open_dataset(data)
    table = ds.table.copy()
    table.loc[(table["split"] == "test") & (table["class"] != "disc"), "split"] = "train"
    finish_dataset(data, table, config={"fixture": "one-class test"}, classes=ds.classes,
                   channels=3, dtype="uint8", modality="XC")
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(data), "--synthetic",
                                   str(shapes["synth"]), "--out", str(out),
                                   "--independent-model", *ARGS])
    assert res.exit_code == 1
    assert "test split holds images of 1 class(es) (disc)" in res.output
    assert "undefined" in res.output and not out.exists()


def test_oracle_with_test_images_is_refused(tmp_path: Path, shapes: dict[str, Path]) -> None:
    from .conftest import make_dataset

    # Same seed, another folder: the same pixels as the real dataset, test split included.
    twin = make_dataset(tmp_path / "twin")
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(out),
                                   "--baselines", "oracle", "--extra-real", str(twin), *ARGS])
    assert res.exit_code == 1 and "are real test images" in res.output
    assert not out.exists()
    res = CliRunner().invoke(app, ["evaluate", "--real", str(shapes["data"]), "--synthetic",
                                   str(shapes["synth"]), "--out", str(out),
                                   "--baselines", "oracle", *ARGS])
    assert res.exit_code != 0 and "--extra-real" in res.output


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
