"""``medsynth generate``: class- and prompt-conditioned sampling into PNG, DICOM and NIfTI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.choices import (
    ClassInput,
    DicomLayout,
    InitPairing,
    InitResize,
    ReportBackend,
    ReportWriter,
)
from medsynth.options import OverwriteOpt, PrecisionOpt, SamplerOpt, ThreadsOpt, choice_option


def generate_cmd(
    model: Annotated[Path, typer.Argument(help="Model folder written by `medsynth train` or `medsynth refine`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the synthetic set.")],
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="Class to generate; repeat it, separate with commas, "
                     "or '*' for every class of the model (the default; 'all' too, unless the "
                     "model has a class named 'all', which it then selects)."),
    ] = None,
    n: Annotated[
        int | None,
        typer.Option("--n", "-n", help="Images per requested class (default 16; not with "
                     "--twin or --balance, whose counts come from the dataset)."),
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", "-f", help="Comma-separated output formats, any of: png, "
                          "dicom, nifti.")
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
    sampler: SamplerOpt = "dpmsolver++",
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
        typer.Option("--spacing", help="Pixel spacing 'ROW,COL' in mm for DICOM/NIfTI, or "
                     "'SLICE,ROW,COL' for 3D models (default: the model's, else 1 mm)."),
    ] = None,
    class_input: Annotated[
        ClassInput, choice_option(ClassInput, "--class-input", help="CCELLA-mode models: the class input is the "
                          "requested class one-hot ('class'), the class predicted from the "
                          "description ('text'), or the text's where there is one ('auto').")
    ] = "auto",
    decode_window: Annotated[
        int | None,
        typer.Option("--decode-window", help="Latent models: decode in windows of N latent "
                     "voxels per axis (0 = whole at once; default: whole unless it needs more "
                     "memory than the budget, then windows that fit)."),
    ] = None,
    dicom_layout: Annotated[
        DicomLayout, choice_option(DicomLayout, "--dicom-layout", help="3D models: DICOM as a 'series' of slice files "
                          "(a folder per volume) or one 'enhanced' multi-frame file.")
    ] = "series",
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "auto",
    compile_: Annotated[
        bool, typer.Option("--compile", help="torch.compile the network first: a one-off compile "
                           "(about a minute on a CPU), then faster steps; pays for long runs.")
    ] = False,
    report: Annotated[
        ReportWriter,
        choice_option(ReportWriter, "--report", help="Report writer: 'template' (offline: from the class and the "
                     "conditioning attributes, phrasing drawn from the image's seed), 'llm' (a "
                     "model writes it through the MLLM engine; checked, re-asked, the template "
                     "report as the fallback) or 'none'."),
    ] = "template",
    report_backend: Annotated[
        ReportBackend, choice_option(ReportBackend, "--report-backend", help="llm writer: 'openai' (any OpenAI-compatible "
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
    init_images: Annotated[
        Path | None,
        typer.Option("--init-images", help="Image prompts: a dataset folder or an image folder "
                     "(root/<class>/*); each sample starts from one of its images noised to "
                     "--strength (SDEdit), of any target --class."),
    ] = None,
    init_class: Annotated[
        list[str] | None,
        typer.Option("--init-class", help="Take init images of this source class only "
                     "(repeatable; default: every image of --split)."),
    ] = None,
    init_pairing: Annotated[
        InitPairing, choice_option(InitPairing, "--init-pairing", help="Init images of a sample of class C: any, same "
                          "(class C: variations) or other (other classes: class translation).")
    ] = "any",
    split: Annotated[
        str | None,
        typer.Option("--split", help="Dataset split(s), comma-separated, that --init-images, "
                     "--twin and --balance take their real images from (default train)."),
    ] = None,
    strength: Annotated[
        float | None,
        typer.Option("--strength", help="Share of the denoising run from the init image, in "
                     "(0, 1]: small keeps the image, 1 = from noise (default 0.7 with "
                     "--init-images, 1 with --twin)."),
    ] = None,
    init_resize: Annotated[
        InitResize, choice_option(InitResize, "--init-resize", help="Non-square init images: pad (the long side "
                          "fits) or crop (the short side fits), as data import --resize.")
    ] = "pad",
    twin: Annotated[
        Path | None,
        typer.Option("--twin", help="Synthetic twin of this dataset: one image per real image "
                     "of --split, same class and own description; then a near-copy check."),
    ] = None,
    balance: Annotated[
        Path | None,
        typer.Option("--balance", help="Top up the classes of this dataset (--split counts) so "
                     "real + synthetic reach --target per class."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="--balance: images per class after balancing, 'max' "
                     "(the largest class; the default) or a number (not below any class's "
                     "count)."),
    ] = None,
    privacy_check: Annotated[
        bool, typer.Option("--privacy-check/--no-privacy-check",
                           help="--twin: measure near-copies of real images on the result.")
    ] = True,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed run in --out to exactly --n images.")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Sample synthetic images (with their reports) from a trained model.

    Examples:

      medsynth generate MODEL --class melanoma --n 500 --out SYNTH --format png,dicom,nifti

      medsynth generate MODEL --init-images DATASET --init-class nevus --class melanoma --strength 0.6 --n 100 --out SYNTH

      medsynth generate MODEL --twin DATASET --split train --out TWIN

      medsynth generate MODEL --balance DATASET --target max --out SYNTH
    """
    from medsynth.choices import comma_list
    from medsynth.errors import BadUsageError
    from medsynth.generate.config import GenerateConfig
    from medsynth.generate.run import run_generate
    from medsynth.ui import out as stdout

    sp = None
    if spacing:
        try:
            sp = [float(v) for v in comma_list(spacing)]
        except ValueError:
            raise BadUsageError(f"--spacing {spacing!r}: expected numbers 'ROW,COL' or "
                                "'SLICE,ROW,COL'") from None
    given = {"classes": list(classes) if classes else None, "n": n, "splits": split,
             "balance_target": target}  # the config's rules tell given options from defaults
    cfg = GenerateConfig(
        model=str(model), out=str(out), **{k: v for k, v in given.items() if v is not None},
        formats=formats, prompt=prompt, store=str(store) if store else None,
        prompts_csv=str(prompts_csv) if prompts_csv else None, sampler=sampler, steps=steps,
        guidance=guidance, seed=seed, batch_size=batch_size, ema=not raw_weights,
        prototype_strength=prototype_strength, spacing=sp, threads=threads,
        precision=precision, compile=compile_,
        class_input=class_input, decode_window=decode_window, dicom_layout=dicom_layout,
        report=report, report_backend=report_backend, report_model=report_model,
        report_base_url=report_base_url, report_with_image=report_with_image,
        report_max_reasks=report_max_reasks, report_concurrency=report_concurrency,
        init_images=str(init_images) if init_images else None, init_classes=list(init_class or []),
        init_pairing=init_pairing, strength=strength, init_resize=init_resize,
        twin=str(twin) if twin else None, balance=str(balance) if balance else None,
        privacy_check=privacy_check, oversample=oversample,
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
