"""Options that several commands share (one declaration and help text each).

A choice option is annotated with its ``Literal`` from :mod:`medsynth.choices`: typer turns it
into a ``click.Choice``, so ``--help`` lists the values and click refuses the rest (exit code 2).
Light imports only: every command module uses this.
"""

from __future__ import annotations

from typing import Annotated

import typer

from medsynth.choices import Device, Precision, Sampler

SamplerOpt = Annotated[Sampler, typer.Option(
    "--sampler", help="Sampler (rflow for rectified-flow models).")]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="The network's precision: fp32, bf16 (autocast; images within about "
    "0.02 of fp32) or auto (bf16 on a GPU and on CPUs with bf16 units, else fp32). Recorded per "
    "image in samples.csv.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto: CUDA when present.")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", help="CPU threads for torch (default: the cores free now, i.e. the CPUs minus "
    "the load average, at least 1).")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue a killed run in --out (finished work is kept).")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Delete an earlier output of this command in --out first.")]
