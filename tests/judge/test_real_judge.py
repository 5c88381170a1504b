"""The real-features judge: fitted on a real dataset's train split (never its test split), it
judges images the demo measurers were not made for; `judge validate` reports its AUROC; the
measure judge warns when it calls far more images invalid than real images give."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medsynth.artifacts import input_ref, write_manifest
from medsynth.cli import app
from medsynth.synthset import write_samples

SIZE = 32
CLASSES = ("melanoma", "nevus")  # names the shipped derm criteria know; the pixels are not lesions


def _texture(cls: str, rng: np.random.Generator) -> np.ndarray:
    """Real-looking stand-ins the derm measurer was not made for: stripes vs checks, skin-less."""
    y, x = np.mgrid[:SIZE, :SIZE] / SIZE
    f, ph = rng.uniform(3, 5), rng.uniform(0, 2 * np.pi)
    if cls == "melanoma":
        g = 0.5 + 0.4 * np.sin(2 * np.pi * f * y + ph)
    else:
        g = 0.5 + 0.4 * np.sign(np.sin(2 * np.pi * f * x + ph) * np.sin(2 * np.pi * f * y))
    tint = rng.uniform(0.6, 1.0, 3)
    img = np.clip(g[..., None] * tint + rng.normal(0, 0.03, (SIZE, SIZE, 3)), 0, 1)
    return (img * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    src = root / "src"
    for cls in CLASSES:
        (src / cls).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(_texture(cls, rng)).save(src / cls / f"{i:03d}.png")
    data = root / "data"
    r = CliRunner().invoke(app, ["data", "import", str(src), "--out", str(data), "--val-fraction",
                                 "0.25", "--test-fraction", "0.25", "--modality", "XC"])
    assert r.exit_code == 0, r.output
    # a synthetic set (new textures of both kinds, and two blank images) made by a "model"
    # trained on that dataset
    model = root / "model"
    model.mkdir()
    write_manifest(model, "train", config={"train_splits": ["train"]},
                   inputs=[input_ref(data, "data")], outputs={"classes": list(CLASSES)})
    synth, rows = root / "synth", []
    for k, cls in enumerate(CLASSES):
        for i in range(6):
            arr = _texture(cls, rng) if i < 5 else np.full((SIZE, SIZE, 3), 255, np.uint8)
            rel = f"png/{cls}/{cls}-{i:06d}.png"
            (synth / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(synth / rel)
            rows.append({"sample_id": f"{cls}-{i:06d}", "class": cls, "png": rel, "seed": i,
                         "class_id": k, "description": ""})
    write_samples(synth, rows)
    write_manifest(synth, "generate", config={"n": 6}, inputs=[input_ref(model, "train")],
                   outputs={"samples": "samples.csv", "synthetic": True, "size": SIZE,
                            "classes": list(CLASSES), "formats": ["png"], "channels": 3})
    return {"root": root, "data": data, "synth": synth}


def test_validate_on_held_out_real_images(real: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "v.json"
    r = CliRunner().invoke(app, ["judge", "validate", str(real["data"]), "--json", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert "AUROC own-class vs other-class" in r.output
    assert rep["backend"] == "real-features" and rep["split"] == "test" and rep["n"] == 20
    assert rep["auroc"] > 0.9 and rep["top1"] > 0.8  # stripes vs checks: easy for features
    assert rep["valid_share"] >= 0.8  # held-out real images are valid
    assert rep["fitted_on"] == "train (40 images)"
    assert rep["validity_reference"].startswith("val -> train")
    # the measure judge, made for lesion phantoms, calls these real images invalid
    r = CliRunner().invoke(app, ["judge", "validate", str(real["data"]), "--backend", "measure",
                                 "--criteria", "derm", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["valid_share"] < 0.5
    r = CliRunner().invoke(app, ["judge", "validate", str(real["data"]), "--split", "train"])
    assert r.exit_code != 0 and "held-out" in r.output


def test_the_test_split_is_never_read_for_fitting(real: dict[str, Path], tmp_path: Path) -> None:
    import pandas as pd

    from medsynth.judging.realjudge import RealReference

    data = tmp_path / "data"
    shutil.copytree(real["data"], data)
    labels = pd.read_csv(data / "labels.csv")
    for p in labels[labels["split"] == "test"]["path"]:
        (data / p).unlink()  # fitting would fail if it read any test image
    ref = RealReference.fit(data)
    assert sum(ref.n_train.values()) == 40 and ref.threshold > 0


def test_real_features_judge_a_set_then_filter(real: dict[str, Path], tmp_path: Path) -> None:
    judged = tmp_path / "judged"
    r = CliRunner().invoke(app, ["judge", str(real["synth"]), "--backend", "real-features",
                                 "--out", str(judged)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (judged / "verdicts.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["backend"] for r in rows} == {"real-features"}
    by = {r["sample_id"]: r for r in rows}
    for cls in CLASSES:
        for i in range(5):  # textures of the real kind: valid, and most like their own class
            rec = by[f"{cls}-{i:06d}"]
            assert rec["image_valid"] and rec["score"] > 0.5, rec
            assert rec["verdicts"][0] == {**rec["verdicts"][0], "id": "real_class",
                                          "verdict": "met"}
        blank = by[f"{cls}-000005"]  # a blank image is far from every real one
        assert not blank["image_valid"] and blank["score"] == 0
    m = json.loads((judged / "medsynth.json").read_text())
    assert m["config"]["settings"]["real"] == str(real["data"].resolve())
    assert m["outputs"]["backend_info"]["n_train"] == {"melanoma": 20, "nevus": 20}
    # the filter keeps the valid images (the measure judge would have none to keep)
    r = CliRunner().invoke(app, ["judge", "filter", str(judged), "--out", str(tmp_path / "f"),
                                 "--min-score", "0.5"])
    assert r.exit_code == 0, r.output
    assert "kept 10 image(s)" in " ".join(r.output.split())
    # resume finds the same generated criteria and judges nothing again
    r = CliRunner().invoke(app, ["judge", str(real["synth"]), "--backend", "real-features",
                                 "--out", str(judged), "--resume"])
    assert r.exit_code == 0, r.output
    assert "skipped 12" in r.output
    # a checklist is refused: this judge reads no single criterion
    r = CliRunner().invoke(app, ["judge", str(real["synth"]), "--backend", "real-features",
                                 "--criteria", "derm", "--out", str(tmp_path / "j2")])
    assert r.exit_code != 0 and "leave out --criteria" in r.output
    assert not (tmp_path / "j2").exists()


def test_measure_judge_warns_on_images_it_was_not_made_for(real: dict[str, Path],
                                                           tmp_path: Path) -> None:
    import yaml

    from medsynth.judging.criteria import builtin_path

    crit = yaml.safe_load(builtin_path("derm").read_text())
    crit["classes"] = {c: crit["classes"][c] for c in CLASSES}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(crit))
    r = CliRunner().invoke(app, ["judge", str(real["synth"]), "--criteria", str(tmp_path /
                                 "c.yaml"), "--out", str(tmp_path / "j")], terminal_width=200)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "were judged invalid" in text and "--backend real-features" in text
    m = json.loads((tmp_path / "j" / "medsynth.json").read_text())
    assert any("not made for these images" in n for n in m["outputs"]["notices"])


def test_measure_judge_on_its_own_phantoms_does_not_warn() -> None:
    from medsynth.judging.criteria import load_criteria
    from medsynth.judging.judged import invalid_notice

    crit = load_criteria("derm")
    assert crit.real_invalid_share is not None
    assert invalid_notice(crit, "measure", 0, 30) is None
    assert invalid_notice(crit, "measure", 30, 30) is not None
    assert invalid_notice(crit, "openai", 30, 30) is None


def test_help_lists_the_judges() -> None:
    r = CliRunner().invoke(app, ["judge", "run", "--help"], terminal_width=200)
    text = " ".join(r.output.split())
    for name in ("measure", "real-features", "openai", "transformers"):
        assert name in text
    r = CliRunner().invoke(app, ["judge", "--help"], terminal_width=200)
    assert "validate" in r.output
