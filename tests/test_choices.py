"""Every choice option of generate, train and evaluate lists its choices in ``--help``, taken from
the same ``Literal`` the config validates against (medsynth.choices)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import typing
from typing import Any, Literal

import pytest
import typer

from medsynth import choices as ch
from medsynth.choices import comma_list, values
from medsynth.cli import app

# option -> (its Literal, whether it takes a comma list of them)
EXPECTED: dict[str, dict[str, tuple[object, bool]]] = {
    "generate": {"--sampler": (ch.Sampler, False), "--precision": (ch.Precision, False),
                 "--class-input": (ch.ClassInput, False), "--dicom-layout": (ch.DicomLayout, False),
                 "--report": (ch.ReportWriter, False), "--report-backend": (ch.ReportBackend, False),
                 "--init-pairing": (ch.InitPairing, False), "--init-resize": (ch.InitResize, False),
                 "--format": (ch.Format, True)},
    "train": {"--stage": (ch.Stage, False), "--denoiser": (ch.DenoiserChoice, False),
              "--mixed-precision": (ch.MixedPrecision, False), "--adapter": (ch.TrainAdapter, False)},
    "evaluate": {"--classifier": (ch.Classifier, False), "--device": (ch.Device, False),
                 "--baselines": (ch.Baseline, True)},
}


def _literal(p: Any) -> Any:
    """The Literal an option's value is declared as (None: not a choice option)."""
    ann = p.type_descriptor.annotation
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        ann = next(a for a in typing.get_args(ann) if a is not type(None))
    return ann if typing.get_origin(ann) is Literal else None


def _help(command: str) -> str:
    env = {**os.environ, "COLUMNS": "400", "TERMINAL_WIDTH": "400"}  # no wrapped metavars
    r = subprocess.run([sys.executable, "-m", "medsynth.cli", command, "--help"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return " ".join(r.stdout.split())


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_help_lists_the_choices_of_every_choice_option(command: str) -> None:
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    params = {p.opts[0]: p for p in cmd.params if p.param_type_name == "option"}
    # every option whose value is a choice is in the table (a new one must be added there)
    choice_opts = {o for o, p in params.items() if _literal(p) is not None}
    assert choice_opts == {o for o, (_, comma) in EXPECTED[command].items() if not comma}
    text = _help(command)
    for opt, (lit, comma) in EXPECTED[command].items():
        want = values(lit)
        if comma:  # a comma list is text; its help names every value
            assert all(v in (params[opt].help or "") for v in want), (opt, params[opt].help)
        else:
            assert values(_literal(params[opt])) == want, opt
            # as the metavar, or (a long list) at the end of the help
            assert f"<{'|'.join(want)}>" in text or f"Choices: {', '.join(want)}." in text, \
                (opt, want)


def test_a_value_outside_the_choices_is_a_usage_error() -> None:
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["generate", "m", "-o", "o", "--sampler", "euler"])
    assert r.exit_code == 2 and "euler" in r.output


def test_one_comma_list_parser() -> None:
    assert comma_list("a, b,,c ") == ["a", "b", "c"]
    assert comma_list(["a,b", " C"], lower=True) == ["a", "b", "c"]
    assert comma_list(None) == [] and comma_list("") == []
