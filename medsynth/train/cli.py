"""``medsynth train``: thin command; the work is in :mod:`medsynth.train.loop`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from medsynth.choices import DenoiserChoice, MixedPrecision, Stage, TrainAdapter
from medsynth.options import ThreadsOpt, choice_option


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the ``medsynth`` app."""
    app.command("train", no_args_is_help=True)(train_command)


def train_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (medsynth data import/demo).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    store: Annotated[Path | None, typer.Option(
        help="Description store (medsynth describe); without it the model is class-only.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Recipe YAML (see examples/); options below override it.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps in total.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step per process.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    size: Annotated[int | None, typer.Option(help="Train at this square size (images resized).")] = None,
    classes: Annotated[str | None, typer.Option(
        help="Comma-separated classes to train on (default: all).")] = None,
    splits: Annotated[str | None, typer.Option(
        help="Comma-separated dataset splits to train on (default: train).")] = None,
    denoiser: Annotated[DenoiserChoice | None, choice_option(DenoiserChoice,
        "--denoiser",
        help="Denoising network: auto (diffusers in 2D, monai in 3D), diffusers or monai.")] = None,
    text_encoder: Annotated[str | None, typer.Option(
        help="Text encoder: a transformers folder or cached name (default: packaged all-MiniLM-L6-v2).")] = None,
    mixed_precision: Annotated[MixedPrecision | None, choice_option(MixedPrecision,
        "--mixed-precision",
        help="Training precision (bf16 also works on CPU; auto: bf16 on a bf16 GPU, fp16 on "
        "other GPUs, no on CPU).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of everything.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    sample_every: Annotated[int | None, typer.Option(help="Sample grid every N steps (0 = end only).")] = None,
    threads: ThreadsOpt = None,
    autoencoder: Annotated[Path | None, typer.Option(
        help="Latent diffusion with this trained autoencoder (its folder, or a latent model "
        "folder) instead of training one; checked against the data's channels and 2D/3D.")] = None,
    init: Annotated[str | None, typer.Option(
        help="Start from a pretrained prior: a medsynth model folder, a diffusers Stable "
        "Diffusion pipeline folder or a hub id in the local cache, or a MONAI/MAISI bundle "
        "(docs/priors.md).")] = None,
    adapter: Annotated[TrainAdapter | None, choice_option(TrainAdapter,
        "--adapter", help="How an --init is adapted.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (--adapter lora).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue from the newest checkpoint in --out (step, optimizer, LR, EMA, RNG).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model folder.")] = False,
    stage: Annotated[Stage, choice_option(Stage,
        "--stage", help="What to train: diffusion (the generator) or clip (a contrastive image–text "
        "model for evaluate --clip; needs --store; recipe keys in docs/clip.md).")] = "diffusion",
) -> None:
    """Train a class- and text-conditioned diffusion model (CCELLA dual head + VAP prototypes),
    or with --stage clip a contrastive image–text model (MedCoDi-M's shared space).

    2D images or 3D volumes; pixel space, or latent (recipe latent: true, or --autoencoder):
    an AutoencoderKL phase first, then the denoiser on its latents (docs/train.md).
    """
    from medsynth.choices import comma_list
    from medsynth.errors import BadUsageError
    from medsynth.ui import out as stdout

    if resume and overwrite:
        raise BadUsageError("--resume and --overwrite contradict each other; pick one")
    if stage == "clip":
        from medsynth.train.clip_config import ClipConfig
        from medsynth.train.clip_run import train_clip

        given = {"--grad-accum": grad_accum, "--denoiser": denoiser, "--init": init,
                 "--adapter": adapter, "--lora-rank": lora_rank,
                 "--mixed-precision": mixed_precision, "--sample-every": sample_every}
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise BadUsageError(f"{', '.join(extra)}: diffusion options; --stage clip does not "
                                "use them")
        ccfg = ClipConfig.from_yaml(config) if config else ClipConfig()
        ccfg = ccfg.replace(
            max_steps=max_steps, batch_size=batch_size, lr=lr, size=size,
            classes=comma_list(classes) or None,
            splits=comma_list(splits) or None,
            text_encoder=text_encoder, seed=seed, checkpoint_every=checkpoint_every,
            num_threads=threads)
        folder = train_clip(dataset, out, cfg=ccfg, store_path=store, resume=resume,
                            overwrite=overwrite)
        stdout.print(f"CLIP model written to {folder}")
        return
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import train

    cfg = TrainConfig.from_yaml(config) if config else TrainConfig()
    cfg = cfg.replace(
        max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, size=size,
        classes=comma_list(classes) or None,
        splits=comma_list(splits) or None,
        denoiser=denoiser, text_encoder=text_encoder, mixed_precision=mixed_precision, seed=seed,
        checkpoint_every=checkpoint_every, sample_every=sample_every, num_threads=threads,
        autoencoder=str(autoencoder) if autoencoder else None,
        init=init, adapter=adapter, lora_rank=lora_rank,
    )
    folder = train(dataset, out, cfg=cfg, store_path=store, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) == 0:  # once under accelerate launch
        stdout.print(f"model written to {folder}")
