"""``medsynth refine``: thin command; the work is in :mod:`medsynth.refine.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.choices import RefineAdapter, RefineMethod
from medsynth.options import ThreadsOpt, choice_option


def register(app: typer.Typer) -> None:
    """Add the ``refine`` command to the ``medsynth`` app."""
    app.command("refine", no_args_is_help=True)(refine_command)


def refine_command(
    model: Annotated[Path, typer.Argument(help="Model folder to refine (medsynth train/refine).")],
    judged: Annotated[Path, typer.Option(
        help="Judged folder (medsynth judge) of a synthetic set this model generated.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Refined model folder to write.")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Refine recipe YAML (see examples/refine-*.yaml); options below "
        "override it.")] = None,
    method: Annotated[RefineMethod | None, choice_option(RefineMethod,
        "--method", help="dpo (Diffusion-DPO on winner/loser pairs, default) or rwr (reward-weighted "
        "fine-tuning on accepted images plus real training images).")] = None,
    adapter: Annotated[RefineAdapter | None, choice_option(RefineAdapter,
        "--adapter", help="lora (peft LoRA on the attention projections, default) or full (all weights, "
        "frozen copy as the DPO reference; small networks only).")] = None,
    rounds: Annotated[int | None, typer.Option(
        help="Rounds: 1 trains on --judged; each further round samples with the current "
        "model, judges the images with --judged's criteria and backend, and trains again.")] = None,
    steps: Annotated[int | None, typer.Option(
        "--max-steps", "--steps",
        help="Optimizer steps per round (as train's --max-steps; --steps: the old name).")] = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta (inverse temperature).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (AdamW).")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Pairs (dpo) or images (rwr) per step.")] = None,
    bad_score: Annotated[float | None, typer.Option(
        help="Pairs whose two scores are both <= this give no signal.")] = None,
    max_pairs: Annotated[int | None, typer.Option(
        help="Use at most this many pairs per round (seeded subset; 0 = all).")] = None,
    accept_score: Annotated[float | None, typer.Option(
        help="rwr: minimum score of an accepted synthetic image.")] = None,
    real_fraction: Annotated[float | None, typer.Option(
        help="rwr: share of each batch from the model's real training images.")] = None,
    early_stop: Annotated[bool | None, typer.Option(
        "--early-stop/--no-early-stop",
        help="dpo: stop when the winners' loss rises above the reference's (default on).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of pairs order, noise and rounds.")] = None,
    threads: ThreadsOpt = None,
    resume: Annotated[bool, typer.Option(
        help="Continue a killed run in --out (same recipe; steps and rounds may grow).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing refine output.")] = False,
) -> None:
    """Preference fine-tuning (MAGIC): learn from a judge's verdicts on the model's own images."""
    from medsynth.errors import BadUsageError
    from medsynth.refine.config import RefineConfig
    from medsynth.refine.run import refine
    from medsynth.ui import out as stdout

    if resume and overwrite:
        raise BadUsageError("--resume and --overwrite contradict each other; pick one")
    cfg = RefineConfig.from_yaml(config) if config else RefineConfig()
    cfg = cfg.replace(method=method, adapter=adapter, rounds=rounds, steps=steps, beta=beta, lr=lr,
                      rank=rank, batch_size=batch_size, bad_score=bad_score, max_pairs=max_pairs,
                      accept_score=accept_score, real_fraction=real_fraction,
                      early_stop=early_stop, seed=seed, num_threads=threads)
    folder = refine(model, judged, out, cfg=cfg, resume=resume, overwrite=overwrite)
    stdout.print(f"refined model written to {folder}")
