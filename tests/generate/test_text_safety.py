"""Any Unicode in a prompt survives generate end to end: journal, --resume, samples.csv, reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.synthset import open_synthetic

runner = CliRunner()
# Line and paragraph separators and NEL (str.splitlines splits on all three), NUL, a BOM,
# non-Latin text: pasted from PDFs and word processors.
ODD = "clear lungs\u2028no effusion\u2029heart normal\x85end \x00 \ufeffbom é 肺"


def test_generate_and_resume_with_line_separators_in_the_prompt(gray16_model: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ["generate", str(gray16_model), "--out", str(out), "--class", "normal", "--n", "3",
            "--prompt", ODD, "--steps", "2", "--batch-size", "1", "--format", "png,dicom"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert len(table) == 3 and (table["description"] == ODD).all()
    assert open_synthetic(out).table["description"].tolist() == [ODD] * 3
    assert (out / table["report"][0]).is_file() and (out / table["sr"][0]).is_file()
    journal = out / ".journal" / "rank0.jsonl"
    assert journal.read_bytes().count(b"\n") == 3  # one line per record for any line tool
    # A killed run: one record journaled, the rest never finished.
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(lines[0] + b"\n")
    kept = json.loads(lines[0])["sample_id"]
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".png", ".dcm", ".txt") and p.stem != kept:
            p.unlink()
    (out / "medsynth.json").unlink()
    (out / "samples.csv").unlink()
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert "made 2 now" in " ".join(r.output.split())
    assert pd.read_csv(out / "samples.csv", keep_default_na=False)["description"].tolist() \
        == [ODD] * 3


def test_a_prompt_that_is_not_text_is_refused_before_any_work(gray16_model: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "bad"
    bad = os.fsdecode(b"opacity \xff")  # not UTF-8: a lone surrogate in Python
    r = runner.invoke(app, ["generate", str(gray16_model), "--out", str(out), "--prompt", bad])
    assert r.exit_code == 1 and "not valid Unicode text" in r.output
    assert len(r.output.strip().splitlines()) <= 2  # the message and its hint
    assert not out.exists()
