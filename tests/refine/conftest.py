"""Tiny models, synthetic sets made by generate, and judged folders made by the shared
judging core (:func:`medsynth.judging.judged.run_judge`) with a fixture judge.

The fixture judge answers four criteria per image; how many are met comes from a score function
(a real pixel measurement, the share of strongly red pixels, by default, or a score per image
index), so a judged folder is exactly what ``medsynth judge`` writes and its scores are known.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from medsynth.judging.judges import Judge
from tests.generate.conftest import make_model

CRITERIA_TEXT = """\
name: refine-fixture
version: 1
subject: test image
measurer: none
validity: The image is a test image.
classes:
  melanoma:
    criteria:
      - {id: c1, text: "criterion one"}
      - {id: c2, text: "criterion two"}
      - {id: c3, text: "criterion three"}
      - {id: c4, text: "criterion four"}
  nevus:
    criteria:
      - {id: c1, text: "criterion one"}
      - {id: c2, text: "criterion two"}
      - {id: c3, text: "criterion three"}
      - {id: c4, text: "criterion four"}
"""

Score = Callable[[str, np.ndarray], float]
"""(sample_id, channel-first pixels) -> score in {0, .25, .5, .75, 1}."""


class FixtureJudge(Judge):
    """A judge (the shared ``Judge`` base: info, notices, close, context manager) whose verdicts
    come from a score function."""

    name = "fixture"
    model = "fixture"

    def __init__(self, criteria, score: Score, valid: Callable[[str], bool] | None = None):
        super().__init__(criteria)
        self.score, self.valid = score, valid

    def judge(self, items: Iterable) -> Iterator:
        from medsynth.judging.judges import JudgeOutcome, make_record

        for item in items:
            image, _ = item.load()
            met = int(round(4 * self.score(item.sample_id, image)))
            answer = {"image_valid": self.valid(item.sample_id) if self.valid else True,
                      "criteria": {f"c{k}": {"verdict": "met" if k <= met else "not_met",
                                             "confidence": 1.0, "rationale": "fixture"}
                                   for k in range(1, 5)}}
            yield JudgeOutcome(item, make_record(self.criteria, item.cls, item.sample_id, answer,
                                                 backend=self.name, model=self.model))


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


def red_share(_sid: str, image: np.ndarray) -> float:
    """Share of pixels whose red channel exceeds the others by 40 levels, x4, in quarters."""
    a = image.astype(int)
    share = float(((a[0] - np.maximum(a[1], a[2])) > 40).mean())
    return round(min(1.0, share * 4) * 4) / 4


def by_index(scores: dict[int, float]) -> Score:
    """A score per image index within its class (the sample id's number)."""
    return lambda sid, _img: scores[int(sid.rsplit("-", 1)[1]) % len(scores)]


def criteria_file(root: Path) -> Path:
    path = root / "criteria.yaml"
    if not path.is_file():
        path.write_text(CRITERIA_TEXT)
    return path


def judge_factory(score: Score = red_share, valid: Callable[[str], bool] | None = None):
    return lambda crit: FixtureJudge(crit, score, valid)


def write_judged(synth: Path, out: Path, score: Score = red_share,
                 valid: Callable[[str], bool] | None = None) -> Path:
    """A judged folder of ``synth`` written by the shared core with the fixture judge."""
    from medsynth.judging.criteria import load_criteria
    from medsynth.judging.judged import JudgeConfig, run_judge

    crit_path = criteria_file(out.parent)
    summary = run_judge(JudgeConfig(synth=str(synth), criteria=str(crit_path), out=str(out)),
                        judge=FixtureJudge(load_criteria(crit_path), score, valid))
    assert summary.status == "complete"
    return out


@pytest.fixture(scope="session")
def judged(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 images per class, one description per class, scores 1, .75, .5, .25, 0, .5 by index."""
    root = tmp_path_factory.mktemp("judged")
    synth = generate_set(tiny_model, root / "synth")
    return write_judged(synth, root / "judged",
                        score=by_index({0: 1.0, 1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0, 5: 0.5}))


def manifest(folder: Path) -> dict:
    return json.loads((folder / "medsynth.json").read_text())
