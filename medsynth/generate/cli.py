"""``medsynth generate``: class- and prompt-conditioned sampling into PNG, DICOM and NIfTI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.models.sampler import SAMPLERS


def generate_cmd(
    model: Annotated[Path, typer.Argument(help="Model folder written by `medsynth train` or `medsynth refine`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the synthetic set.")],
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="Class to generate; repeat it, separate with commas, "
                     "or '*' for every class of the model (the default; 'all' too, unless the "
                     "model has a class named 'all', which it then selects)."),
    ] = None,
    n: Annotated[int, typer.Option("--n", "-n", help="Images per requested class.")] = 16,
    formats: Annotated[
        str, typer.Option("--format", "-f", help="Comma-separated output formats: png, dicom, nifti.")
    ] = "png",
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", help="One explicit description for every image (default: a "
                     "random stored description of the class per image)."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Description store to draw from (default: the model's store)."),
    ] = None,
    prompts_csv: Annotated[
        Path | None,
        typer.Option("--prompts-csv", help="CSV with columns class,prompt,n for mixed batches "
                     "(empty prompt = random stored description)."),
    ] = None,
    sampler: Annotated[
        str, typer.Option("--sampler", help=f"{', '.join(SAMPLERS)}.")
    ] = "dpmsolver++",
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps.")] = 25,
    guidance: Annotated[
        float, typer.Option("--guidance", help="Classifier-free guidance scale on class and text.")
    ] = 3.0,
    seed: Annotated[int, typer.Option("--seed", help="Base seed (each image derives its own).")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images denoised together.")] = 16,
    raw_weights: Annotated[
        bool, typer.Option("--raw-weights", help="Use the raw (non-EMA) UNet weights.")
    ] = False,
    prototype_strength: Annotated[
        float | None,
        typer.Option("--prototype-strength", help="Prototype Condition Mechanism strength in "
                     "[0, 1] (default: the model's)."),
    ] = None,
    spacing: Annotated[
        str | None,
        typer.Option("--spacing", help="Pixel spacing 'ROW,COL' in mm for DICOM/NIfTI "
                     "(default: the model's, else 1 mm)."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="CPU threads for torch (default: the cores free now, i.e. "
                     "the CPUs minus the load average, at least 1)."),
    ] = None,
    report: Annotated[
        str,
        typer.Option("--report", help="Report writer: 'template' (offline: from the class and the "
                     "conditioning attributes, phrasing drawn from the image's seed), 'llm' (a "
                     "model writes it through the MLLM engine; checked, re-asked, the template "
                     "report as the fallback) or 'none'."),
    ] = "template",
    report_backend: Annotated[
        str, typer.Option("--report-backend", help="llm writer: 'openai' (any OpenAI-compatible "
                          "server) or 'transformers' (a local model folder).")
    ] = "openai",
    report_model: Annotated[
        str | None, typer.Option("--report-model", help="llm writer: model name (openai) or "
                                 "local model folder (transformers).")
    ] = None,
    report_base_url: Annotated[
        str | None, typer.Option("--report-base-url", help="llm writer, openai: the server's base "
                                 "URL, e.g. http://127.0.0.1:8000/v1 (API key from "
                                 "$MEDSYNTH_OPENAI_API_KEY or $OPENAI_API_KEY).")
    ] = None,
    report_with_image: Annotated[
        bool, typer.Option("--report-with-image", help="llm writer: show the model the generated "
                           "image too (a vision-language model).")
    ] = False,
    report_max_reasks: Annotated[
        int, typer.Option("--report-max-reasks", help="llm writer: re-asks of an invalid report "
                          "before the template report is used (with a recorded warning).")
    ] = 2,
    report_concurrency: Annotated[
        int, typer.Option("--report-concurrency", help="llm writer: requests in flight (openai) "
                          "or per batch (transformers).")
    ] = 4,
    oversample: Annotated[
        int,
        typer.Option("--oversample", help="Make K candidates per requested image (same class and "
                     "description, own seeds); `medsynth judge` then `judge filter --per-request` "
                     "keeps the best of each, i.e. exactly --n per class again."),
    ] = 1,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Make only this sample id of the run's plan (repeatable): "
                     "regenerates single images exactly."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed run in --out to exactly --n images.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete an earlier generate output in --out first.")
    ] = False,
) -> None:
    """Sample synthetic images (with their reports) from a trained model.

    Example: medsynth generate MODEL --class melanoma --n 500 --out SYNTH --format png,dicom,nifti
    """
    from medsynth.errors import BadUsageError
    from medsynth.generate.config import EVERY_CLASS, GenerateConfig
    from medsynth.generate.run import run_generate
    from medsynth.ui import out as stdout

    sp = None
    if spacing:
        try:
            sp = [float(v) for v in spacing.split(",")]
        except ValueError:
            raise BadUsageError(f"--spacing {spacing!r}: expected two numbers 'ROW,COL'") from None
    cfg = GenerateConfig(
        model=str(model), out=str(out),
        classes=list(classes or ([] if prompts_csv else [EVERY_CLASS])),
        n=n, formats=formats.split(","), prompt=prompt, store=str(store) if store else None,
        prompts_csv=str(prompts_csv) if prompts_csv else None, sampler=sampler, steps=steps,
        guidance=guidance, seed=seed, batch_size=batch_size, ema=not raw_weights,
        prototype_strength=prototype_strength, spacing=sp, threads=threads, report=report,
        report_backend=report_backend, report_model=report_model,
        report_base_url=report_base_url, report_with_image=report_with_image,
        report_max_reasks=report_max_reasks, report_concurrency=report_concurrency,
        oversample=oversample,
    )
    res = run_generate(cfg, resume=resume, overwrite=overwrite, only=only)
    if res.manifest is not None:
        o = res.manifest.outputs
        counts = ", ".join(f"{k}: {v}" for k, v in o["counts"].items())
        stdout.print(f"{res.out}: {o['n_images']} image(s) ({counts}) in {', '.join(o['formats'])}; "
                     f"made {res.n_made} now at {res.images_per_second:.2f} img/s")


def register(app: typer.Typer) -> None:
    """Add the ``generate`` command to the ``medsynth`` app."""
    app.command("generate")(generate_cmd)
