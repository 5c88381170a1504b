from __future__ import annotations

import subprocess
import sys

import typer
from typer.testing import CliRunner

from medsynth.cli import app

runner = CliRunner()


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys, medsynth.cli; "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'monai', 'pydicom', 'pandas') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _walk(cmd, path: list[str]):  # type: ignore[no-untyped-def]
    yield path, cmd
    if getattr(cmd, "commands", None):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, [*path, name])


def test_every_command_and_option_has_help() -> None:
    root = typer.main.get_command(app)
    missing = []
    seen = {" ".join(path) for path, _ in _walk(root, [])}
    assert {"data", "data info", "data import"} <= seen
    for path, cmd in _walk(root, []):
        if path and not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for p in cmd.params:
            if p.param_type_name == "option" and not p.help and p.name not in ("help",):
                missing.append(f"{' '.join(path)} {p.opts[0]}")
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
    assert not missing, f"no help text: {missing}"


def test_unknown_command_is_usage_error() -> None:
    r = runner.invoke(app, ["frobnicate"])
    assert r.exit_code == 2
