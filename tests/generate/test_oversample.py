"""``generate --oversample K``: K candidates per requested image, candidate 0 = the plain run's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.generate.conditioning import SampleSpec
from medsynth.generate.oversample import expand
from tests.generate.test_run import FAST, read_png

runner = CliRunner()


def test_expand_keeps_request_and_seed_of_candidate_zero() -> None:
    plan = [SampleSpec(f"a-{i:06d}", "a", 0, i, 100 + i, f"text {i}", "prompt") for i in range(2)]
    out = expand(plan, 3, base_seed=0)
    assert [s.sample_id for s in out] == [f"a-{i:06d}" for i in range(6)]
    assert [s.description for s in out] == ["text 0"] * 3 + ["text 1"] * 3
    assert out[0].seed == 100 and out[3].seed == 101
    assert len({s.seed for s in out}) == 6
    assert expand(plan, 1, base_seed=0) == plan
    assert expand(plan, 3, base_seed=0) == out  # deterministic


def test_generate_oversample(rgb_model: Path, tmp_path: Path) -> None:
    plain, over = tmp_path / "plain", tmp_path / "over"
    args = ["generate", str(rgb_model), "--n", "2", "--format", "png", *FAST]
    r = runner.invoke(app, [*args, "--out", str(plain)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args, "--out", str(over), "--oversample", "3"])
    assert r.exit_code == 0, r.output
    t0 = pd.read_csv(plain / "samples.csv", keep_default_na=False)
    t = pd.read_csv(over / "samples.csv", keep_default_na=False)
    assert t.groupby("class").size().to_dict() == {"melanoma": 6, "nevus": 6}
    assert (t["oversample"] == 3).all() and (t0["oversample"] == 1).all()
    assert (t["request"] == t["index"] // 3).all()
    for (_cls, _req), g in t.groupby(["class", "request"]):
        assert g["description"].nunique() == 1 and g["seed"].nunique() == 3
    # candidate 0 of request i is the plain run's image i: same seed, description, pixels
    for _, row in t0.iterrows():
        c0 = t[(t["class"] == row["class"]) & (t["request"] == row["index"])].iloc[0]
        assert c0["seed"] == row["seed"] and c0["description"] == row["description"]
        diff = np.abs(read_png(over / c0["png"]).astype(int) - read_png(plain / row["png"]))
        assert diff.max() <= 1
    import json

    m = json.loads((over / "medsynth.json").read_text())
    assert m["outputs"]["oversample"] == 3 and m["config"]["oversample"] == 3
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--oversample", "0"])
    assert r.exit_code == 2
