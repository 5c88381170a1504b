"""Tiny models, synthetic sets made by generate, and judged folders in the TEAM2 format.

Judged folders are written here as ``medsynth judge`` writes them (manifest of stage judge whose
input is the set, criteria.yaml, verdicts.jsonl, scores.csv); the score of an image is a real
measurement of its pixels (the share of strongly red pixels), so pairs reflect the images.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.generate.conftest import make_model

CRITERIA_TEXT = """\
format: 1
classes:
  melanoma:
    - {id: red, text: "the lesion is red", weight: 1}
  nevus:
    - {id: red, text: "the lesion is red", weight: 1}
"""


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-bit RGB model (melanoma, nevus; random weights) with its dataset and store."""
    return make_model(tmp_path_factory.mktemp("refine-model"), classes=["melanoma", "nevus"],
                      channels=3, dtype="uint8", modality="XC")


@pytest.fixture(scope="session")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model with the same classes (other weights)."""
    return make_model(tmp_path_factory.mktemp("refine-other"), classes=["melanoma", "nevus"],
                      channels=3, dtype="uint8", modality="XC", seed=1)


def generate_set(model: Path, out: Path, *, n: int = 6, prompt: str | None = "a lesion",
                 seed: int = 0) -> Path:
    """A synthetic set made by the real generate stage (2 DDIM steps)."""
    from medsynth.generate.config import GenerateConfig
    from medsynth.generate.run import run_generate

    cfg = GenerateConfig(model=str(model), out=str(out), n=n, prompt=prompt, steps=2,
                         sampler="ddim", guidance=1.0, seed=seed, threads=1)
    run_generate(cfg)
    return out


def red_share(png: Path) -> float:
    """Share of pixels whose red channel exceeds the others by 40 levels, rounded to 1/8."""
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    share = float(((a[..., 0] - np.maximum(a[..., 1], a[..., 2])) > 40).mean())
    return round(min(1.0, share * 4) * 8) / 8


def write_judged(synth: Path, out: Path,
                 score: Callable[[pd.Series, Path], float] | None = None,
                 valid: Callable[[pd.Series], bool] | None = None) -> Path:
    """A judged folder of ``synth`` in the TEAM2 format (one criterion, met when score >= .5)."""
    from medsynth.artifacts import (
        JsonlAppender,
        atomic_write_text,
        input_ref,
        sha256_bytes,
        write_manifest,
    )

    table = pd.read_csv(synth / "samples.csv", keep_default_na=False, dtype={"sample_id": str})
    out.mkdir(parents=True)
    atomic_write_text(out / "criteria.yaml", CRITERIA_TEXT)
    sha = sha256_bytes(CRITERIA_TEXT.encode())
    rows = []
    with JsonlAppender(out / "verdicts.jsonl") as w:
        for _, r in table.iterrows():
            ok = valid(r) if valid else True
            s = float(score(r, synth / r["png"])) if score else red_share(synth / r["png"])
            s = s if ok else 0.0
            met = "met" if s >= 0.5 else "not_met"
            w.write({"sample_id": r["sample_id"], "class": r["class"], "image_valid": ok,
                     "score": s, "verdicts": [{"id": "red", "verdict": met, "confidence": 1.0,
                                               "rationale": f"red share {s}"}],
                     "backend": "measure", "model": "fixture", "criteria_sha256": sha})
            rows.append({"sample_id": r["sample_id"], "class": r["class"], "score": s,
                         "image_valid": ok, "n_met": int(met == "met"),
                         "n_not_met": int(met != "met"), "n_unsure": 0,
                         "red": int(met == "met")})
    pd.DataFrame(rows).to_csv(out / "scores.csv", index=False)
    write_manifest(out, "judge", config={"criteria_sha256": sha, "backend": "measure",
                                         "model": "fixture"},
                   inputs=[input_ref(synth, "generate")],
                   outputs={"n_images": len(rows), "score_mean": float(np.mean(
                       [r["score"] for r in rows]))})
    return out


def by_index(scores: dict[int, float]) -> Callable[[pd.Series, Path], float]:
    """A score function from the image's index within its class."""
    return lambda r, _p: scores[int(r["index"]) % len(scores)]


@pytest.fixture(scope="session")
def judged(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 images per class, one description per class, scores 1, .75, .5, .25, 0, .5 by index."""
    root = tmp_path_factory.mktemp("judged")
    synth = generate_set(tiny_model, root / "synth")
    return write_judged(synth, root / "judged",
                        score=by_index({0: 1.0, 1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0, 5: 0.5}))


def manifest(folder: Path) -> dict:
    return json.loads((folder / "medsynth.json").read_text())
