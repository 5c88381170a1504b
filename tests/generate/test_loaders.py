"""Sets that load in one line: Hugging Face ``datasets`` (imagefolder + metadata.csv) and MONAI
datalists, for synthetic sets (generate) and real ones (data import); the DICOM SR of reports
with characters DICOM text VRs forbid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from tests.generate.test_writers import assert_valid_dicom

runner = CliRunner()


@pytest.fixture(scope="module")
def synth(rgb_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loaders") / "synth"
    r = runner.invoke(app, ["generate", str(rgb_model), "--n", "3", "--out", str(out),
                            "--format", "png,dicom,nifti", "--steps", "2"])
    assert r.exit_code == 0, r.output
    return out


def test_huggingface_imagefolder_loads_the_set(synth: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    table = pd.read_csv(synth / "samples.csv", keep_default_na=False)
    ds = datasets.load_dataset("imagefolder", data_dir=str(synth / "png"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert len(ds) == len(table) == 6
    assert {"image", "label", "report", "description", "seed", "sample_id", "class_id"} <= \
        set(ds.column_names)
    by_id = table.set_index("sample_id")
    for ex in ds:
        row = by_id.loc[ex["sample_id"]]
        assert ex["label"] == row["class"] and int(ex["seed"]) == int(row["seed"])
        assert ex["description"] == row["description"]
        assert ex["report"] == (synth / row["report"]).read_text().strip()
        assert "IMPRESSION:" in ex["report"]
        png = np.asarray(ex["image"])
        from PIL import Image

        np.testing.assert_array_equal(png, np.asarray(Image.open(synth / row["png"])))


def test_monai_datalists_load_for_png_and_nifti(synth: Path) -> None:
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    table = pd.read_csv(synth / "samples.csv", keep_default_na=False)
    manifest = json.loads((synth / "medsynth.json").read_text())
    assert manifest["outputs"]["loaders"]["monai"] == "datalist.json"
    for name, fmt in (("datalist.json", "png"), ("datalist_png.json", "png"),
                      ("datalist_nifti.json", "nifti")):
        items = load_decathlon_datalist(str(synth / name), is_segmentation=False,
                                        data_list_key="training")
        assert len(items) == len(table)
        for item, row in zip(items, table.itertuples(), strict=True):
            assert item["image"] == str(synth / getattr(row, fmt))
            assert item["label"] == ["melanoma", "nevus"].index(row._2)
            assert item["report"] == (synth / row.report).read_text().strip()
        loaded = LoadImaged(keys="image", image_only=True)(items[0])["image"]
        assert int(np.prod(loaded.shape)) == 3 * 16 * 16


def test_metadata_from_another_run_replaced_whole(rgb_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ["generate", str(rgb_model), "--class", "nevus", "--n", "2", "--out", str(out),
            "--steps", "1", "--report", "none"]
    assert runner.invoke(app, args).exit_code == 0
    # another run's files land in the folder: a metadata.csv and a metadata.jsonl
    (out / "png" / "metadata.csv").write_text("file_name,label,report\nother/x.png,cat,meow\n")
    (out / "png" / "metadata.jsonl").write_text('{"file_name": "other/y.png", "label": "dog"}\n')
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    meta = pd.read_csv(out / "png" / "metadata.csv", keep_default_na=False)
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert meta["sample_id"].tolist() == table["sample_id"].tolist()
    assert set(meta["label"]) == {"nevus"} and not (out / "png" / "metadata.jsonl").exists()
    assert (meta["report"] == "").all() and (table["report"] == "").all()
    assert not (out / "reports").exists() and (table["report_writer"] == "").all()
    assert not list(out.rglob("*.part"))


def test_real_dataset_gets_the_same_datalist(image_folder: Path, tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist

    out = tmp_path / "ds"
    r = runner.invoke(app, ["data", "import", str(image_folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    labels = pd.read_csv(out / "labels.csv")
    total = 0
    for key, split in (("training", "train"), ("validation", "val"), ("test", "test")):
        items = load_decathlon_datalist(str(out / "datalist.json"), is_segmentation=False,
                                        data_list_key=key) if (labels["split"] == split).any() \
            else []
        part = labels[labels["split"] == split]
        assert sorted(i["image"] for i in items) == sorted(str(out / p) for p in part["path"])
        assert all(i["label"] == ["disc", "square"].index(i["class"]) for i in items)
        total += len(items)
    assert total == len(labels) == 12


def test_sr_sanitises_text_dicom_forbids(tmp_path: Path) -> None:
    import pydicom

    from medsynth.generate.writers.dicom import DicomRunInfo, write_dicom
    from medsynth.generate.writers.sr import sanitize_text, write_sr

    nasty = "Opacity\x00 in the\x07 left\x1b[31m lung \\ 5 mm\x7f\x85 é 中文 \ud800end\r\nnext"
    clean = sanitize_text(nasty)
    assert clean == "Opacity in the left[31m lung \\ 5 mm é 中文 end\r\nnext"
    run = DicomRunInfo.new(["pneumonia"], "DX", "m")
    img = tmp_path / "a.dcm"
    write_dicom(np.full((1, 8, 8), 7, np.uint16), img, run=run, cls="pneumonia",
                sample_id="pneumonia-000000", instance_number=1, description=nasty, seed=1)
    sr = tmp_path / "a.sr.dcm"
    write_sr(sr, img, [("FINDINGS", nasty), ("COLOURS", "Two: red \x01 and white."),
                       ("IMPRESSION", "Pneumonia.")], instance_number=1, seed=1)
    assert_valid_dicom(sr)
    ds = pydicom.dcmread(sr)
    texts = [i.TextValue for c in ds.ContentSequence for i in c.get("ContentSequence", [])
             if i.ValueType == "TEXT"]
    assert "Opacity in the left[31m lung \\ 5 mm é 中文 end next" in texts
    assert "Colours: Two: red and white." in texts
    assert all(not any(ord(ch) < 32 and ch not in "\r\n\t" for ch in t) for t in texts)
