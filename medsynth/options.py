"""Options that several commands share (one declaration and help text each).

A choice option is annotated with its ``Literal`` from :mod:`medsynth.choices`: typer turns it
into a ``click.Choice``, so ``--help`` lists the values and click refuses the rest (exit code 2).
Light imports only: every command module uses this.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from medsynth.choices import Device, Precision, Sampler, values

MAX_METAVAR = 20
"""Longer ``<a|b|c>`` metavars squeeze the option names of a 100-column help (cut with …)."""


def choice_option(lit: object, *decls: str, help: str, **kw: Any) -> Any:
    """``typer.Option`` of a ``Literal``-typed choice (the annotation makes click check it): the
    choices show as the metavar, or, where that is long, at the end of the help."""
    vals = values(lit)
    if len("|".join(vals)) + 2 <= MAX_METAVAR:
        return typer.Option(*decls, help=help, **kw)
    return typer.Option(*decls, help=f"{help} Choices: {', '.join(vals)}.", metavar="<choice>",
                        **kw)

SamplerOpt = Annotated[Sampler, choice_option(
    Sampler, "--sampler", help="Sampler (rflow for rectified-flow models).")]
PrecisionOpt = Annotated[Precision, choice_option(
    Precision, "--precision", help="The network's precision: fp32, bf16 (autocast; images within about "
    "0.02 of fp32) or auto (bf16 on a GPU and on CPUs with bf16 units, else fp32). Recorded per "
    "image in samples.csv.")]
DeviceOpt = Annotated[Device, choice_option(Device, "--device", help="auto: CUDA when present.")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", help="CPU threads for torch (default: the cores free now, i.e. the CPUs minus "
    "the load average, at least 1).")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue a killed run in --out (finished work is kept).")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Delete an earlier output of this command in --out first.")]
