"""The rules between generate's options live in GenerateConfig: the Python API refuses the same
combinations as ``medsynth generate``, with the same one-line message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import BadUsageError
from medsynth.generate.config import GenerateConfig

CASES: list[tuple[list[str], dict[str, Any], str]] = [
    (["--split", "val"], {"splits": ["val"]}, "--split needs --init-images, --twin or --balance"),
    (["--target", "5"], {"balance_target": "5"}, "--target needs --balance"),
    (["--twin", "D", "--n", "3"], {"twin": "D", "n": 3}, "--n does not go with --twin"),
    (["--balance", "D", "--n", "3"], {"balance": "D", "n": 3}, "--n does not go with --balance"),
    (["--prompt", "x", "--prompts-csv", "p.csv"], {"prompt": "x", "prompts_csv": "p.csv"},
     "--prompt and --prompts-csv exclude each other"),
    (["--strength", "0.5"], {"strength": 0.5}, "--strength needs --init-images or --twin"),
    (["--twin", "D", "--balance", "D"], {"twin": "D", "balance": "D"}, "--twin excludes --balance"),
    (["--steps", "0"], {"steps": 0}, "--steps must be >= 1"),
    (["--format", "png,jpeg"], {"formats": "png,jpeg"}, "--format: unknown format"),
]


@pytest.mark.parametrize("argv, kwargs, message", CASES, ids=[c[2][:30] for c in CASES])
def test_python_api_refuses_what_the_command_refuses(tmp_path: Path, argv: list[str],
                                                     kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BadUsageError, match=message) as api:
        GenerateConfig(model="m", out=str(tmp_path / "o"), **kwargs)
    assert "\n" not in api.value.message
    r = CliRunner().invoke(app, ["generate", str(tmp_path / "m"), "-o", str(tmp_path / "o"), *argv])
    assert r.exit_code == 2, r.output
    assert api.value.message in " ".join(r.output.split()), r.output
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_defaults_are_not_given_options() -> None:
    # the defaults of --n, --split and --target never trip the rules that refuse given ones
    cfg = GenerateConfig(model="m", out="o", twin="D")
    assert cfg.n == 16 and cfg.splits == ["train"] and cfg.balance_target == "max"
    assert GenerateConfig(model="m", out="o", prompts_csv="p.csv").classes == []
