"""``medsynth generate`` end to end on tiny models: formats, manifest, reports, resume, safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.clinical_reports import parse_report, parse_sections
from tests.generate.test_writers import assert_valid_dicom

runner = CliRunner()
FAST = ["--steps", "2", "--batch-size", "4"]


def generate(*args: str | Path) -> object:
    res = runner.invoke(app, ["generate", *[str(a) for a in args]])
    return res


def read_png(p: Path) -> np.ndarray:
    from PIL import Image

    a = np.asarray(Image.open(p))
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)


def test_all_formats_16bit(gray16_model: Path, tmp_path: Path) -> None:
    import nibabel as nib
    import pydicom

    out = tmp_path / "synth"
    res = generate(gray16_model, "--class", "pneumonia", "--class", "normal", "--n", "3",
                   "--out", out, "--format", "png,dicom,nifti", *FAST)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    for col in ("sample_id", "class", "png", "dicom", "nifti", "report", "description", "seed",
                "sampler", "steps", "guidance", "model_sha256", "medsynth_version"):
        assert col in table.columns
    assert len(table) == 6 and table["sample_id"].is_unique and table["seed"].is_unique
    assert table.groupby("class").size().to_dict() == {"normal": 3, "pneumonia": 3}
    manifest = json.loads((out / "medsynth.json").read_text())
    assert manifest["stage"] == "generate"
    assert {i["stage"] for i in manifest["inputs"]} == {"train", "describe"}
    assert (table["model_sha256"] == manifest["outputs"]["model_sha256"]).all()
    studies, series = set(), {}
    for row in table.itertuples():
        png = read_png(out / row.png)
        assert png.dtype == np.uint16 and png.shape == (1, 16, 16)
        assert_valid_dicom(out / row.dicom)
        ds = pydicom.dcmread(out / row.dicom)
        np.testing.assert_array_equal(ds.pixel_array, png[0])
        assert ds.BitsAllocated == 16 and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.ImageComments == row.description and ds.SeriesDescription == row._2
        assert ds.ConversionType == "SYN" and ds.PatientID == row.sample_id
        assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.7]  # from the model
        studies.add(ds.StudyInstanceUID)
        series.setdefault(row._2, set()).add(ds.SeriesInstanceUID)
        img = nib.load(out / row.nifti)
        np.testing.assert_allclose(img.affine, np.diag([0.7, 0.7, 1.0, 1.0]))
        np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, 0].T, png[0])
        report = (out / row.report).read_text()
        assert "FINDINGS:" in report and "IMPRESSION:" in report and row.description
        # the report states nothing the conditioning (here: the prompt text) did not
        stated, asked = parse_report("cxr", report), parse_report("cxr", row.description)
        assert stated and all(asked.get(k) == v for k, v in stated.items() if k != "heart_size")
        assert row.report_writer == "template" and row.sr == f"sr/{row._2}/{row.sample_id}.dcm"
        assert_valid_dicom(out / row.sr)
        sr = pydicom.dcmread(out / row.sr)
        assert sr.Modality == "SR" and sr.StudyInstanceUID == ds.StudyInstanceUID
        assert (sr.PatientID, sr.PatientName) == (ds.PatientID, ds.PatientName)
        assert sr.PatientIdentityRemoved == "YES" and sr.SeriesInstanceUID != ds.SeriesInstanceUID
        items = [i for c in sr.ContentSequence for i in c.get("ContentSequence", [])]
        refs = [i.ReferencedSOPSequence[0] for i in items if i.ValueType == "IMAGE"]
        assert [(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in refs] == \
            [(ds.SOPClassUID, ds.SOPInstanceUID)]
        texts = " ".join(i.TextValue for i in items if i.ValueType == "TEXT")
        assert parse_sections(report).section("IMPRESSION") in texts
    assert len(studies) == 1 and all(len(v) == 1 for v in series.values())
    assert len({next(iter(v)) for v in series.values()}) == 2
    # 16-bit pixels really use the 16-bit range (not squashed to 8 bits).
    assert max(int(read_png(out / p).max()) for p in table["png"]) > 255


def test_rgb_prompt_and_single_image_regeneration(rgb_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    prompt = "dark asymmetric lesion ü, irregular border"
    res = generate(rgb_model, "--class", "melanoma", "--n", "4", "--out", out, "--prompt", prompt,
                   "--format", "png,dicom", "--sampler", "ddpm", *FAST)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert (table["description"] == prompt).all() and (table["sampler"] == "ddpm").all()
    first = read_png(out / table["png"][2])
    assert first.shape == (3, 16, 16) and first.dtype == np.uint8
    for p in table["dicom"]:
        assert_valid_dicom(out / p)
    # Regenerate image 2 alone (a batch of one instead of four): the same picture.
    one = tmp_path / "one"
    res = generate(rgb_model, "--class", "melanoma", "--n", "4", "--out", one, "--prompt", prompt,
                   "--format", "png", "--sampler", "ddpm", "--only", table["sample_id"][2],
                   "--steps", "2", "--batch-size", "1")
    assert res.exit_code == 0, res.output
    t1 = pd.read_csv(one / "samples.csv", keep_default_na=False)
    assert list(t1["sample_id"]) == [table["sample_id"][2]] and t1["seed"][0] == table["seed"][2]
    again = read_png(one / t1["png"][0])
    diff = np.abs(again.astype(int) - first.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (diff.max(), (diff > 0).sum())


def test_prompts_csv_mixed_batch(rgb_model: Path, tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("class,prompt,n\nmelanoma,blue-white veil,2\nnevus,,3\n")
    out = tmp_path / "s"
    res = generate(rgb_model, "--prompts-csv", csv, "--out", out, "--format", "nifti", *FAST)
    assert res.exit_code == 0, res.output
    t = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert t.groupby("class").size().to_dict() == {"melanoma": 2, "nevus": 3}
    assert (t[t["class"] == "melanoma"]["description"] == "blue-white veil").all()
    # nevus rows draw from the model's store (its only stored description).
    assert (t[t["class"] == "nevus"]["description"] == "small round tan lesion, regular border").all()
    assert (t["png"] == "").all() and (t["nifti"] != "").all()
    # The CSV changed since: resuming would make other images, so it is refused.
    csv.write_text("class,prompt,n\nmelanoma,pink nodule,2\nnevus,,3\n")
    res = generate(rgb_model, "--prompts-csv", csv, "--out", out, "--format", "nifti", "--resume",
                   *FAST)
    assert res.exit_code == 1 and "changed" in res.output, res.output


def test_bad_classes_and_paths(rgb_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "x" / "synth"
    for bad in ("../../etc", "glioma", "/tmp"):
        res = generate(rgb_model, "--class", bad, "--n", "1", "--out", out, *FAST)
        assert res.exit_code == 1
        assert "melanoma" in res.output and "nevus" in res.output, res.output
    assert not (tmp_path / "etc").exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()
                  and p.suffix in (".png", ".dcm")) == []
    # An existing output is never overwritten silently.
    res = generate(rgb_model, "--class", "nevus", "--n", "1", "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    res = generate(rgb_model, "--class", "nevus", "--n", "1", "--out", out, *FAST)
    assert res.exit_code == 1 and "--resume" in res.output
    res = generate(rgb_model, "--class", "nevus", "--n", "2", "--out", out, "--resume", *FAST)
    assert res.exit_code == 1 and "n (1 -> 2)" in res.output


def test_odd_class_names_stay_inside_out(tmp_path: Path) -> None:
    import pydicom

    from tests.generate.conftest import make_model

    odd = ["../../escape", "a b/ü\\x", "a_b"]
    model = make_model(tmp_path / "m", classes=odd, channels=1, dtype="uint8", modality="OT")
    out = tmp_path / "box" / "synth"
    res = generate(model, "--class", "all", "--n", "1", "--out", out, "--format", "png,dicom",
                   *FAST)
    assert res.exit_code == 0, res.output
    t = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert list(t["class"]) == odd and t["sample_id"].is_unique
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".png", ".dcm")
               and "synth" in p.parts]
    # PNG, DICOM and the report's DICOM SR of each of the 3 images
    assert len(written) == 9 and all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "box" / "escape").exists()
    for row in t.itertuples():
        assert_valid_dicom(out / row.dicom)
        assert pydicom.dcmread(out / row.dicom).SeriesDescription.startswith(row._2[:4].strip())


def test_killed_run_resumes_to_exactly_n(gray16_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    n = 30
    cmd = [sys.executable, "-m", "medsynth.cli", "generate", str(gray16_model), "--class",
           "pneumonia", "--n", str(n), "--out", str(out), "--format", "png,dicom",
           "--steps", "2", "--batch-size", "1"]
    env = {**os.environ, "MEDSYNTH_NO_PROGRESS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / ".journal" / "rank0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = journal.read_text().count("\n")
    assert 3 <= done_before < n and not (out / "medsynth.json").exists()
    res = generate(gray16_model, "--class", "pneumonia", "--n", str(n), "--out", out,
                   "--format", "png,dicom", "--steps", "2", "--batch-size", "4", "--resume")
    assert res.exit_code == 0, res.output
    t = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert len(t) == n and t["sample_id"].is_unique
    assert sorted(t["sample_id"]) == [f"pneumonia-{i:06d}" for i in range(n)]
    assert len(list((out / "png").rglob("*.png"))) == n
    assert len(list((out / "dicom").rglob("*.dcm"))) == n
    assert not list(out.rglob("*.part"))
    # Images finished before the kill were kept, not redone.
    assert f"made {n - done_before} now" in " ".join(res.output.split()), res.output
    assert json.loads((out / "medsynth.json").read_text())["outputs"]["n_images"] == n


@pytest.mark.slow
def test_sharded_run_matches_single_process(rgb_model: Path, tmp_path: Path) -> None:
    """Two processes under `accelerate launch` make the same images as one, none twice."""
    import shutil

    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    args = ["generate", str(rgb_model), "--class", "all", "--n", "3", "--format", "png",
            "--steps", "2", "--batch-size", "2"]
    one = tmp_path / "one"
    assert generate(*args[1:], "--out", one).exit_code == 0
    two = tmp_path / "two"
    env = {**os.environ, "MEDSYNTH_NO_PROGRESS": "1"}
    r = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "-m", "medsynth.cli", *args, "--out", str(two)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (two / ".journal").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    t1 = pd.read_csv(one / "samples.csv", keep_default_na=False)
    t2 = pd.read_csv(two / "samples.csv", keep_default_na=False)
    assert list(t1["sample_id"]) == list(t2["sample_id"]) and list(t1["seed"]) == list(t2["seed"])
    for p1, p2 in zip(t1["png"], t2["png"], strict=True):
        d = np.abs(read_png(one / p1).astype(int) - read_png(two / p2).astype(int))
        assert d.max() <= 1


def test_model_with_a_deleted_weights_file_is_named_in_one_line(gray16_model: Path,
                                                                tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(gray16_model, model)
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    out = tmp_path / "synth"
    r = generate(model, "--out", out, "--n", "1")
    assert r.exit_code == 1
    assert "unet/diffusion_pytorch_model.safetensors: missing" in r.output, r.output
    assert ".bin" not in r.output and not out.exists()  # no empty output folder left behind
