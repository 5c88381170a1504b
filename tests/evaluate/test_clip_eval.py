"""``evaluate --clip``: the CLIP folder loads in evaluate; in-domain fidelity beside its
reference, alignment matched > shuffled, retrieval above chance; leakage refusals."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.artifacts import atomic_write_bytes, input_ref, read_manifest, write_manifest
from medsynth.cli import app
from medsynth.imaging.dataset import open_dataset
from medsynth.imaging.save import save_png
from medsynth.synthset import SAMPLE_COLUMNS
from medsynth.train.clip_config import ClipConfig
from medsynth.train.clip_run import train_clip
from tests.clip_data import make_clip_data

from .conftest import make_model

ARGS = ["--no-benchmark", "--epochs", "2", "--feature-size", "32"]


def make_described_synthetic(root: Path, dataset: Path, store: Path, model: Path,
                             seed: int = 1) -> Path:
    """A generate-contract set: noisy copies of real train images, each with its own stored
    description in samples.csv (what a text-following generator delivers)."""
    from medsynth.store import open_store

    rng = np.random.default_rng(seed)
    ds = open_dataset(dataset)
    texts = {i: r.text for i, r in open_store(store).by_image().items()}
    rows = []
    for k, cls in enumerate(ds.classes):
        src = ds.split("train")
        src = src[src["class"] == cls]
        for i, (_, row) in enumerate(src.iterrows()):
            a = ds.load(row).array.astype(float) + rng.normal(0, 6, (3, 16, 16))
            sid = f"{cls}-{i:06d}"
            rel = f"png/{cls}/{sid}.png"
            save_png(np.clip(a, 0, 255).astype(np.uint8), root / rel)
            rows.append({"sample_id": sid, "class": cls, "png": rel, "dicom": "", "nifti": "",
                         "report": "", "description": texts[row["image_id"]], "seed": i,
                         "sampler": "ddim", "steps": 5, "guidance": 3.0,
                         "model_sha256": "0" * 64, "medsynth_version": "0.1.0",
                         "class_id": k, "index": i,
                         "description_source": f"store:{row['image_id']}"})
    buf = io.StringIO()
    pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS)).to_csv(buf, index=False)
    atomic_write_bytes(root / "samples.csv", buf.getvalue().encode("utf-8"))
    write_manifest(root, "generate", config={"fixture": "described"},
                   inputs=[input_ref(model, "train")],
                   outputs={"n_images": len(rows), "classes": ds.classes, "channels": 3,
                            "dtype": "uint8", "samples": "samples.csv", "formats": ["png"],
                            "synthetic": True})
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("clip_eval")
    data, store = make_clip_data(base)
    clip = train_clip(data, base / "clip", store_path=store, progress=False,
                      cfg=ClipConfig.tiny(max_steps=60, batch_size=16, lr=3e-3, warmup_steps=5,
                                          eval_every=20, checkpoint_every=60, shift=0.0))
    model = make_model(base / "model", data)
    synth = make_described_synthetic(base / "synth", data, store, model)
    return {"base": base, "data": data, "store": store, "clip": clip, "model": model,
            "synth": synth}


@pytest.fixture(scope="module")
def report(setup: dict[str, Path]) -> Path:
    out = setup["base"] / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(setup["data"]), "--synthetic",
                                   str(setup["synth"]), "--out", str(out), "--clip",
                                   str(setup["clip"]), *ARGS])
    assert res.exit_code == 0, res.output
    assert "CLIP retrieval on real test" in res.output
    return out


def test_clip_figures_in_metrics_and_report(report: Path, setup: dict[str, Path]) -> None:
    m = read_manifest(report, "evaluate")
    assert [i["stage"] for i in m.inputs] == ["data", "generate", "clip"]
    c = json.loads((report / "metrics.json").read_text())["clip"]
    # (a) fidelity in the CLIP space, beside the real-vs-real reference; Lite0 stays too.
    ref, s = c["fidelity"]["reference"]["overall"], c["fidelity"]["sets"]["synth"]["overall"]
    assert ref["fid"] is not None and s["fid"] is not None and s["coverage"] is not None
    assert set(c["fidelity"]["sets"]["synth"]["per_class"]) == {"disc", "square"}
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["fidelity"]["sets"]["synth"]["overall"]["fid"] is not None
    # (b) alignment: images are closer to their own text than to a shuffled one.
    a = c["alignment"]["sets"]["synth"]
    assert a["n"] == 28 and a["matched"] > a["shuffled"]["mean"]
    assert a["shuffled"]["gap_lo"] > 0 and a["shuffled"]["win"] > 0.6
    real = c["alignment"]["real"]
    assert real["n"] == c["n_test_described"] == 14 and real["matched"] > real["shuffled"]["mean"]
    # (c) retrieval on the real test split, against chance.
    r = c["retrieval"]
    assert r["n_images"] == 14 and r["i2t_r1"] > r["i2t_r1_chance"]
    assert r["t2i_r5"] >= r["t2i_r5_chance"]
    html = (report / "report.html").read_text()
    assert 'id="clip"' in html and "Retrieval on the real test split" in html


def test_alignment_shuffled_gap_is_zero_for_unrelated_texts() -> None:
    """A text that says nothing about the image: matched and shuffled are alike."""
    import torch

    from medsynth.evaluate.clip_features import alignment

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(200, 8, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(200, 8, generator=g), dim=1)
    a = alignment(img, txt, [f"t{i}" for i in range(200)], [0] * 200)
    assert a["shuffled"]["gap_lo"] < 0 < a["shuffled"]["gap_hi"]
    aligned = alignment(img, img.clone(), [f"t{i}" for i in range(200)], [0] * 200)
    assert aligned["shuffled"]["gap_lo"] > 0.5 and aligned["shuffled"]["win"] == 1.0


def test_clip_store_without_test_texts_skips_retrieval(setup: dict[str, Path], tmp_path: Path
                                                       ) -> None:
    _, store = make_clip_data(tmp_path / "other", test_texts=False)
    # Same images, same ids: a store made without the test split (and a fresh dataset copy
    # is not needed: --clip-store only supplies texts).
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(setup["data"]), "--synthetic",
                                   str(setup["synth"]), "--out", str(out), "--clip",
                                   str(setup["clip"]), "--clip-store", str(store), *ARGS])
    assert res.exit_code == 0, res.output
    c = json.loads((out / "metrics.json").read_text())["clip"]
    assert c["retrieval"] is None and "--split test" in c["retrieval_reason"]
    assert c["alignment"]["real"] is None
    assert c["alignment"]["sets"]["synth"]["matched"] is not None


def test_leaking_or_foreign_clip_is_refused_before_writing(setup: dict[str, Path],
                                                           tmp_path: Path) -> None:
    import shutil

    leaky = tmp_path / "leaky"
    shutil.copytree(setup["clip"], leaky)
    info = json.loads((leaky / "clip_model.json").read_text())
    info["train_splits"] = ["train", "test"]
    (leaky / "clip_model.json").write_text(json.dumps(info))
    out = tmp_path / "r1"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(setup["data"]), "--synthetic",
                                   str(setup["synth"]), "--out", str(out), "--clip", str(leaky),
                                   *ARGS])
    assert res.exit_code == 1 and "test split" in res.output and not out.exists()
    # A CLIP model of another dataset: refused unless the user vouches for independence.
    other, _ = make_clip_data(tmp_path / "foreign", seed=3)
    model = make_model(tmp_path / "m2", other)
    synth = make_described_synthetic(tmp_path / "s2", other, setup["store"], model)
    out = tmp_path / "r2"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(other), "--synthetic", str(synth),
                                   "--out", str(out), "--clip", str(setup["clip"]), *ARGS])
    assert res.exit_code == 1 and "another dataset" in res.output and not out.exists()
    # Not a CLIP folder at all.
    res = CliRunner().invoke(app, ["evaluate", "--real", str(setup["data"]), "--synthetic",
                                   str(setup["synth"]), "--out", str(out), "--clip",
                                   str(setup["model"]), *ARGS])
    assert res.exit_code == 1 and "'train' artifact, expected 'clip'" in res.output
    assert not out.exists()
