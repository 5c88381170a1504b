"""Refine from a set whose prompts hold line separators, NUL and a BOM: journals, verdicts,
pairs and the refined model all take them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medsynth.refine.config import RefineConfig
from medsynth.refine.run import refine
from tests.generate.test_text_safety import ODD
from tests.refine.conftest import by_index, generate_set, manifest, write_judged


def test_refine_from_prompts_with_line_separators(tiny_model: Path, tmp_path: Path) -> None:
    synth = generate_set(tiny_model, tmp_path / "synth", n=4, prompt=ODD)
    assert (pd.read_csv(synth / "samples.csv", keep_default_na=False)["description"]
            == ODD).all()
    judged = write_judged(synth, tmp_path / "judged",
                          score=by_index({0: 1.0, 1: 0.75, 2: 0.25, 3: 0.0}))
    out = refine(tiny_model, judged, tmp_path / "m2", progress=False,
                 cfg=RefineConfig(steps=2, batch_size=2, log_every=1, checkpoint_every=1,
                                  early_stop=False, rank=4))
    assert manifest(out)["stage"] == "refine"
    assert len(pd.read_csv(out / "rounds" / "1" / "pairs.csv")) > 0  # pairs share the prompt
