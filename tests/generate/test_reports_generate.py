"""generate --report on the cxr demo (the issue's done-when: reports, SRs that pass dciodvfy,
a set that datasets and MONAI load) and --report llm over real HTTP with its fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.clinical_reports import normalize, parse_report
from medsynth.store import open_store
from tests.generate.test_writers import assert_valid_dicom
from tests.scripted_openai import Scripted, serve

runner = CliRunner()


def ok(*args: str | Path) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def cxr_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cxr demo pipeline, tiny: phantoms, offline describe, a 2-step model."""
    from medsynth.train.config import TrainConfig

    root = tmp_path_factory.mktemp("cxr")
    ok("data", "demo", "cxr", "--out", root / "data", "--n-per-class", "6", "--size", "32")
    ok("describe", root / "data", "--out", root / "store")
    recipe = root / "tiny.yaml"
    recipe.write_text(TrainConfig.tiny(max_steps=2, checkpoint_every=2).to_yaml())
    ok("train", root / "data", "--store", root / "store", "--out", root / "model", "--config",
       recipe)
    return root


def test_cxr_demo_reports_sr_and_loaders(cxr_demo: Path, tmp_path: Path) -> None:
    import pydicom
    from monai.data import load_decathlon_datalist

    datasets = pytest.importorskip("datasets")
    out = tmp_path / "synth"
    ok("generate", cxr_demo / "model", "--n", "2", "--out", out, "--report", "template",
       "--format", "png,dicom", "--steps", "2")
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert len(table) == 8 and (table["report_writer"] == "template").all()
    store = open_store(cxr_demo / "store").by_image()
    for row in table.itertuples():
        text = (out / row.report).read_text()
        assert text.startswith("FINDINGS:") and "\nIMPRESSION:\n" in text
        # the report states exactly the stored description's attributes (what conditioned it)
        rec = store[row.description_source.removeprefix("store:")]
        asked = normalize("cxr", rec.attributes)
        assert parse_report("cxr", text) == asked and asked
        assert_valid_dicom(out / row.sr)
        sr, img = pydicom.dcmread(out / row.sr), pydicom.dcmread(out / row.dicom)
        assert sr.StudyInstanceUID == img.StudyInstanceUID and sr.PatientID == img.PatientID
    manifest = json.loads((out / "medsynth.json").read_text())["outputs"]
    assert manifest["reports"]["writer"] == "template" and manifest["reports"]["family"] == "cxr"
    assert manifest["reports"]["written"] == {"template": 8}
    ds = datasets.load_dataset("imagefolder", data_dir=str(out / "png"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert sorted(ds["sample_id"]) == sorted(table["sample_id"])
    assert all(r.startswith("FINDINGS:") for r in ds["report"])
    items = load_decathlon_datalist(str(out / "datalist.json"), is_segmentation=False)
    assert len(items) == 8 and {i["class"] for i in items} == set(table["class"])
    # the real dataset loads the same way
    real = load_decathlon_datalist(str(cxr_demo / "data" / "datalist.json"),
                                   is_segmentation=False)
    assert real and all(Path(i["image"]).is_file() for i in real)
    # a judged and filtered subset keeps its SRs and loads the same way, class ids unchanged
    ok("judge", out, "--criteria", "cxr", "--out", tmp_path / "judged")
    ok("judge", "filter", tmp_path / "judged", "--per-class-n", "1", "--out", tmp_path / "best")
    best = pd.read_csv(tmp_path / "best" / "samples.csv", keep_default_na=False)
    assert len(best) == 4 and all((tmp_path / "best" / p).is_file() for p in best["sr"])
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "best" / "png"),
                               split="train", cache_dir=str(tmp_path / "hf2"))
    assert sorted(ds["sample_id"]) == sorted(best["sample_id"])
    items = load_decathlon_datalist(str(tmp_path / "best" / "datalist.json"),
                                    is_segmentation=False)
    ids = dict(zip(table["sample_id"], table["class_id"], strict=True))
    assert len(items) == 4 and all(i["label"] == ids[i["sample_id"]] for i in items)


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    with serve() as state:
        yield state


def test_generate_with_llm_reports_and_fallback(gray16_model: Path, scripted: Scripted,
                                                tmp_path: Path) -> None:
    out = tmp_path / "synth"
    scripted.default = ("ok", "FINDINGS:\nThe lungs are clear.\n\nIMPRESSION:\nNormal study.")
    ok("generate", gray16_model, "--class", "normal", "--class", "pneumonia", "--n", "2",
       "--out", out, "--steps", "1", "--report", "llm", "--report-base-url",
       scripted.url,
       "--report-model", "scripted", "--report-max-reasks", "1", "--format", "png,dicom")
    t = pd.read_csv(out / "samples.csv", keep_default_na=False)
    by_cls = t.groupby("class")["report_writer"].agg(set).to_dict()
    # normal: the model's report is consistent, kept; pneumonia (right lower zone asked):
    # "lungs are clear" contradicts it, re-asked once, then the template report
    assert by_cls == {"normal": {"llm"}, "pneumonia": {"template-fallback"}}
    for row in t.itertuples():
        text = (out / row.report).read_text()
        if row._2 == "normal":
            assert "The lungs are clear." in text and row.report_warning == ""
        else:
            assert "side" in row.report_warning and parse_report("cxr", text)["side"] == "right"
        assert_valid_dicom(out / row.sr)
    answers = [json.loads(x) for f in (out / "reports").glob("llm_answers.rank*.jsonl")
               for x in f.read_text().splitlines()]
    assert sorted(a["sample_id"] for a in answers) == sorted(t["sample_id"])
    assert all(len(a["answers"]) == (1 if a["writer"] == "llm" else 2) for a in answers)
    info = json.loads((out / "medsynth.json").read_text())["outputs"]["reports"]
    assert info["backend"] == "openai" and info["written"] == {"llm": 2, "template-fallback": 2}


def test_report_options_checked() -> None:
    r = runner.invoke(app, ["generate", "m", "--out", "x", "--report", "poem"])
    assert r.exit_code == 2 and "--report" in r.output
    r = runner.invoke(app, ["generate", "m", "--out", "x", "--report", "llm"])
    assert r.exit_code == 2 and "--report-model" in r.output
