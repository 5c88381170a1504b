"""Report–image consistency in evaluate: reports that describe their images beat shuffled ones;
the report text is shown beside example images in report.html."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.artifacts import atomic_write_bytes, atomic_write_text, input_ref, write_manifest
from medsynth.cli import app
from medsynth.clinical_reports import context_for, template_report
from medsynth.imaging.dataset import open_dataset
from medsynth.synthset import SAMPLE_COLUMNS, open_synthetic


def _set_with_reports(root: Path, dataset: Path, *, lie: bool = False) -> Path:
    """A synthetic-set folder of real training phantoms with template reports of their own
    ground truth (``lie``: each image gets the report of another image of its class)."""
    ds = open_dataset(dataset)
    train = ds.split("train")
    rows = []
    for cls, grp in train.groupby("class"):
        grp = grp.head(10)
        donors = grp.iloc[::-1] if lie else grp
        for i, ((_, row), (_, donor)) in enumerate(zip(grp.iterrows(), donors.iterrows(),
                                                       strict=True)):
            sid = f"{cls}-{i:06d}"
            png = f"png/{cls}/{sid}.png"
            (root / png).parent.mkdir(parents=True, exist_ok=True)
            (root / png).write_bytes(ds.path_of(row).read_bytes())
            ctx = context_for(sample_id=sid, cls=str(cls), family="derm",
                              attributes=donor.to_dict(), seed=i)
            rep = f"reports/{cls}/{sid}.txt"
            atomic_write_text(root / rep, template_report(ctx).text)
            rows.append({"sample_id": sid, "class": cls, "png": png, "report": rep,
                         "description": "", "seed": i, "report_writer": "template"})
    buf = io.StringIO()
    pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS)).to_csv(buf, index=False)
    atomic_write_bytes(root / "samples.csv", buf.getvalue().encode())
    write_manifest(root, "generate", config={}, inputs=[input_ref(dataset, "data")],
                   outputs={"samples": "samples.csv", "synthetic": True, "modality": "XC"})
    return root


@pytest.fixture(scope="module")
def derm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("derm") / "derm"
    r = CliRunner().invoke(app, ["data", "demo", "derm", "--out", str(out), "--n-per-class",
                                 "16", "--size", "64"])
    assert r.exit_code == 0, r.output
    return out


def test_consistent_reports_beat_shuffled_ones(derm: Path, tmp_path: Path) -> None:
    from medsynth.evaluate.reports_check import reports_html, reports_report

    real = open_dataset(derm)
    honest = open_synthetic(_set_with_reports(tmp_path / "honest", derm))
    liar = open_synthetic(_set_with_reports(tmp_path / "liar", derm, lie=True))
    liar.name = "liar"
    rep, examples = reports_report(real, [honest, liar])
    h, lie = rep["sets"]["honest"], rep["sets"]["liar"]
    assert h["n"] == lie["n"] == 30 and h["family"] == "derm"
    # the measured diameter agrees with the honest report far better than with a shuffled one
    assert h["report"]["diameter_mm"] < 0.6 * h["shuffled"]["diameter_mm"]
    assert h["report"]["colors"] > h["shuffled"]["colors"]
    assert h["report"]["diameter_mm"] < lie["report"]["diameter_mm"]
    assert len(examples) == 2 * 3 * 2  # two per class and set
    page = reports_html(rep, examples)
    assert "LESION SIZE:" in page and "data:image/png;base64," in page and "liar" in page


def test_sets_without_reports_are_named(derm: Path, tmp_path: Path) -> None:
    from medsynth.evaluate.reports_check import reports_report

    s = _set_with_reports(tmp_path / "s", derm)
    t = pd.read_csv(s / "samples.csv", keep_default_na=False)
    t["report"] = ""
    t.to_csv(s / "samples.csv", index=False)
    rep, examples = reports_report(open_dataset(derm), [open_synthetic(s)])
    assert rep["sets"]["s"]["n"] == 0 and "--report none" in rep["sets"]["s"]["reason"]
    assert examples == []
