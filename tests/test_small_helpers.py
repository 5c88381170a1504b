"""The one CSV training log (checkpoints.CsvLog) and the one folder-clearing helper."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medsynth.artifacts import clear_folder
from medsynth.checkpoints import CsvLog


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_log_resumes_at_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    log = CsvLog(path, ["step", "loss"])
    log.start(lambda r: True)
    assert path.read_text().strip() == "step,loss"  # a fresh log: the header
    for s in (1, 2, 3):
        log.write({"step": s, "loss": 1.0 / s})
    resumed = CsvLog(path, ["step", "loss"])
    resumed.start(lambda r: int(r["step"]) <= 2)  # the checkpoint was at step 2
    resumed.write({"step": 3, "loss": 0.25})
    assert [(r["step"], r["loss"]) for r in _rows(path)] == [("1", "1.0"), ("2", "0.5"),
                                                             ("3", "0.25")]
    with pytest.raises(ValueError):
        resumed.write({"step": 4, "loss": 0.2, "other": 1})
    CsvLog(path, ["step", "loss"], ignore_extra=True).write({"step": 4, "loss": 0.2, "x": 1})
    assert _rows(path)[-1] == {"step": "4", "loss": "0.2"}


def test_csv_log_of_another_process_writes_nothing(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "log.csv", ["step"], enabled=False)
    log.start(lambda r: True)
    log.write({"step": 1})
    assert not (tmp_path / "log.csv").exists()


def test_clear_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "a").write_text("a")
    (out / "b").write_text("b")
    clear_folder(out)
    assert out.is_dir() and not any(out.iterdir())
    (out / "c").write_text("c")
    clear_folder(out, remove=True, best_effort=True)
    assert not out.exists()
    clear_folder(out)  # nothing there: nothing to do
