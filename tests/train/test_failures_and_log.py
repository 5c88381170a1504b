"""Issue 14's train items: no debris after a failed run; the resumed log equals the full one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import MedsynthError
from medsynth.models.bundle import load_bundle
from medsynth.train.config import TrainConfig
from medsynth.train.loop import train
from tests.train.fixtures import log_rows, make_dataset, make_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fail")
    ds = make_dataset(root / "ds")
    make_store(root / "store", ds)
    return {"root": root, "ds": root / "ds", "store": root / "store"}



def test_failed_validation_leaves_nothing_behind(tiny: dict[str, Path]) -> None:
    runner = CliRunner()
    out = tiny["root"] / "model"
    args = ["train", str(tiny["ds"]), "--out", str(out), "--max-steps", "1", "--batch-size", "2",
            "--sample-every", "0"]
    r = runner.invoke(app, [*args, "--classes", "red,green"])
    assert r.exit_code == 1 and "unknown classes" in r.output
    assert not out.exists()  # no train_config.yaml, no folder
    r = runner.invoke(app, [*args, "--size", "10"])  # 10 px: not divisible by the UNet's 4
    assert r.exit_code == 1 and "divisible" in r.output and not out.exists()
    tiny_recipe = tiny["root"] / "tiny.yaml"
    tiny_recipe.write_text(TrainConfig.tiny(max_steps=1).to_yaml())
    r = runner.invoke(app, [*args, "--config", str(tiny_recipe)])  # the next run: no --overwrite
    assert r.exit_code == 0, r.output
    # A failed --overwrite of a finished model leaves that model as it was.
    before = (out / "medsynth.json").read_bytes()
    r = runner.invoke(app, [*args, "--config", str(tiny_recipe), "--classes", "green",
                            "--overwrite"])
    assert r.exit_code == 1 and (out / "medsynth.json").read_bytes() == before
    assert load_bundle(out).info.steps == 1


def test_failure_after_setup_removes_its_debris(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "bad_encoder"
    cfg = TrainConfig.tiny(text_encoder=str(tiny["root"] / "no-such-encoder"))
    with pytest.raises(MedsynthError, match="text encoder"):
        train(tiny["ds"], out, cfg=cfg, store_path=tiny["store"], progress=False)
    assert not out.exists()
    # An existing empty folder stays (it was the user's), emptied of what the run wrote.
    out.mkdir()
    with pytest.raises(MedsynthError):
        train(tiny["ds"], out, cfg=cfg, store_path=tiny["store"], progress=False)
    assert out.is_dir() and not list(out.iterdir())
    train(tiny["ds"], out, cfg=TrainConfig.tiny(), store_path=tiny["store"], progress=False)
    assert (out / "medsynth.json").is_file()


def test_kill_before_the_first_checkpoint_needs_no_overwrite(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "killed"
    cfg = TrainConfig.tiny(max_steps=4, checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):
        train(tiny["ds"], out, cfg=cfg, progress=False, interrupt_after=1)
    assert (out / "train_config.yaml").is_file() and not (out / "checkpoints" / "step-0000004").exists()
    train(tiny["ds"], out, cfg=cfg.replace(max_steps=2), progress=False)  # nothing to resume
    assert load_bundle(out).info.steps == 2


def test_resumed_log_rows_equal_the_uninterrupted_run(tiny: dict[str, Path]) -> None:
    """Log every 4 steps, checkpoint every 3: the row of step 4 averages steps 1-4 either way."""
    root = tiny["root"]
    cfg = TrainConfig.tiny(max_steps=8, log_every=4, checkpoint_every=3, warmup_steps=2)
    train(tiny["ds"], root / "full", cfg=cfg, store_path=tiny["store"], progress=False)
    with pytest.raises(KeyboardInterrupt):  # killed after step 5: the last checkpoint is step 3
        train(tiny["ds"], root / "part", cfg=cfg, store_path=tiny["store"], progress=False,
              interrupt_after=5)
    train(tiny["ds"], root / "part", cfg=cfg, store_path=tiny["store"], resume=True,
          progress=False)
    full, part = log_rows(root / "full"), log_rows(root / "part")
    assert [r["step"] for r in part] == [r["step"] for r in full] == ["4", "8"]
    for key in ("loss", "mse", "class_ce"):
        np.testing.assert_allclose([float(r[key]) for r in part], [float(r[key]) for r in full],
                                   rtol=1e-6, err_msg=key)
