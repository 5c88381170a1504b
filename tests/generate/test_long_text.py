"""Long prompts: the whole text conditions (chunked windows), old models keep the 64-token cut,
what is still cut beyond the cap is warned once and recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.models.text_encoder import TextEncoder, TextEncoderRef

runner = CliRunner()
HEAD = ("Frontal chest radiograph. There is patchy airspace consolidation in the right lower "
        "zone with air bronchograms and blunting of the right costophrenic angle. ") * 3
A, B = HEAD + "The heart is normal in size.", HEAD + "The heart is markedly enlarged."


@pytest.fixture(scope="module")
def encoders() -> tuple[TextEncoder, TextEncoder]:
    return TextEncoder(TextEncoderRef(long_text="cut")), TextEncoder(TextEncoderRef())


def test_texts_differing_after_64_tokens_embed_differently(encoders: tuple) -> None:
    import torch

    cut, chunks = encoders
    n_a, n_b = chunks.token_counts([A, B])
    assert n_a > 64 and n_b > 64 and chunks.capacity == 62 + 7 * 46 + 2 == 386
    ha, ma = chunks.encode([A])
    hb, mb = chunks.encode([B])
    # every token conditions: the features hold one vector per token, and they differ
    assert int(ma.sum()) == n_a and int(mb.sum()) == n_b
    assert not torch.allclose(ha[0, : n_a - 10], hb[0, : n_a - 10]) or n_a != n_b
    assert (ha[0, -8:] - hb[0, -8:]).abs().max() > 1e-3
    ca, _ = cut.encode([A], warn=False)
    cb, _ = cut.encode([B], warn=False)
    assert torch.equal(ca, cb) and ca.shape[1] == 64  # the old behaviour: the first window only
    # a text within one window reads the same in both modes (same tokens, same features)
    short = "Clear lungs; normal heart size."
    hs, ms = chunks.encode([short])
    hc, mc = cut.encode([short])
    assert torch.equal(ms, mc) and torch.allclose(hs, hc, atol=1e-5)
    # the first window's tokens are those of the plain encoding of the text's first 64 tokens
    assert torch.allclose(ha[0, :63], ca[0, :63], atol=1e-5)


def test_windows_join_every_token_once(encoders: tuple) -> None:
    _, chunks = encoders
    text = " ".join(f"w{i}" for i in range(120))
    n = chunks.token_counts([text])[0]
    assert 4 * 64 < n < chunks.capacity  # five windows or more
    h, m = chunks.encode([text, "short"])
    assert int(m[0].sum()) == n and int(m[1].sum()) == chunks.token_counts(["short"])[0]
    huge = text + text
    assert chunks.truncation([huge])["n_cut"] == 1
    h, m = chunks.encode([huge], warn=False)
    assert int(m[0].sum()) == chunks.capacity


def _old_model(model: Path, dest: Path) -> Path:
    """A copy of ``model`` whose record predates long texts (no long_text keys)."""
    shutil.copytree(model, dest)
    info = json.loads((dest / "medsynth_model.json").read_text())
    for k in ("long_text", "chunk_overlap", "max_chunks"):
        info["text_encoder"].pop(k, None)
    (dest / "medsynth_model.json").write_text(json.dumps(info))
    return dest


def _pixels(model: Path, out: Path, prompt: str) -> tuple[np.ndarray, str]:
    from PIL import Image

    r = runner.invoke(app, ["generate", str(model), "--class", "pneumonia", "--n", "1", "--out",
                            str(out), "--prompt", prompt, "--steps", "2", "--report", "none"])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out / "samples.csv", keep_default_na=False)
    return np.asarray(Image.open(out / t["png"][0])), r.output


def test_prompts_differing_after_64_tokens_give_different_images(gray16_model: Path,
                                                                 tmp_path: Path) -> None:
    a, out_a = _pixels(gray16_model, tmp_path / "a", A)
    b, _ = _pixels(gray16_model, tmp_path / "b", B)
    assert "token" not in out_a  # nothing cut: no warning
    assert not np.array_equal(a, b)
    m = json.loads((tmp_path / "a" / "medsynth.json").read_text())["outputs"]["text_cut"]
    assert m == {"images": 0, "max_tokens": 386, "long_text": "chunks"}
    # a model recorded before long texts keeps its behaviour: cut at 64 tokens, same image
    old = _old_model(gray16_model, tmp_path / "old")
    oa, out_oa = _pixels(old, tmp_path / "oa", A)
    ob, _ = _pixels(old, tmp_path / "ob", B)
    assert np.array_equal(oa, ob)
    assert out_oa.count("64-token window") == 1 and "1 of 1 prompts" in out_oa
    m = json.loads((tmp_path / "oa" / "medsynth.json").read_text())["outputs"]["text_cut"]
    assert m == {"images": 1, "max_tokens": 64, "long_text": "cut"}
    assert pd.read_csv(tmp_path / "oa" / "samples.csv")["text_cut"].tolist() == [1]


def test_text_beyond_the_cap_warned_once_and_recorded(gray16_model: Path, tmp_path: Path) -> None:
    huge = "Patchy consolidation in the right lower zone with air bronchograms, " * 40
    out = tmp_path / "synth"
    r = runner.invoke(app, ["generate", str(gray16_model), "--n", "3", "--out", str(out),
                            "--prompt", huge, "--steps", "1"])
    assert r.exit_code == 0, r.output
    assert r.output.count("386 tokens the text encoder reads") == 1
    assert "6 of 6 prompts" in r.output
    outputs = json.loads((out / "medsynth.json").read_text())["outputs"]
    assert outputs["text_cut"] == {"images": 6, "max_tokens": 386, "long_text": "chunks"}
    assert (pd.read_csv(out / "samples.csv")["text_cut"] == 1).all()
    short = tmp_path / "short"
    r = runner.invoke(app, ["generate", str(gray16_model), "--n", "1", "--out", str(short),
                            "--prompt", "clear lungs", "--steps", "1"])
    assert r.exit_code == 0 and "token" not in r.output
