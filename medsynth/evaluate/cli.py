"""``medsynth evaluate``: does the synthetic data help? Benchmark, fidelity, privacy, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.choices import Baseline, Classifier, values
from medsynth.options import DeviceOpt, OverwriteOpt, choice_option


def evaluate_cmd(
    real: Annotated[Path, typer.Option("--real", help="Real dataset folder (medsynth data); "
                                       "its test split is the benchmark's test set.")],
    synthetic: Annotated[
        list[str], typer.Option("--synthetic", "-s", help="Synthetic set folder (medsynth "
                                "generate); repeat it or separate with commas to compare sets.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder to write.")],
    classifier: Annotated[
        Classifier, choice_option(Classifier, "--classifier", help="Downstream classifier (MONAI).")] = "small",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per benchmark setting; the "
                                       "intervals resample seeds and test images, and a "
                                       "verdict needs at least 2.")] = 5,
    real_fraction: Annotated[
        str, typer.Option("--real-fraction", help="Comma-separated real training data per "
                          "setting: fractions (1.0, 0.1) or images per class (20 or 20/class).")] = "1.0,0.1",
    baselines: Annotated[
        str, typer.Option("--baselines", help="Comma-separated baseline arms besides real-only, "
                          f"any of: {', '.join(values(Baseline))}, or none. augment: real with "
                          "standard augmentation, same budget; oracle: real + as many extra real "
                          "images as synthetic (needs --extra-real, which also turns it on).")
    ] = "augment",
    extra_real: Annotated[
        Path | None, typer.Option("--extra-real", help="Dataset folder of extra real images "
                                  "(same classes, not the test images) for the oracle arm.")
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", help="Bootstrap replicates behind every interval "
                          "(test images and seeds resampled together).")] = 2000,
    size: Annotated[int | None, typer.Option("--size", help="Classifier image size in pixels "
                                             "(default: the data's, at most 64).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum classifier epochs (early "
                                        "stopping on the val split usually ends a run sooner; "
                                        "runs still improving at the end are flagged).")] = 30,
    patience: Annotated[int, typer.Option("--patience", help="Early-stopping patience (epochs "
                                          "without a lower real val loss).")] = 8,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Classifier batch size.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Classifier learning rate.")] = 1e-3,
    max_synthetic: Annotated[
        int | None, typer.Option("--max-synthetic-per-class", help="Use at most this many "
                                 "synthetic images per class.")] = None,
    feature_size: Annotated[
        int, typer.Option("--feature-size", help="Input size of the EfficientNet-Lite0 feature "
                          "extractor (224 = native; smaller is faster).")] = 128,
    near_copy_quantile: Annotated[
        float, typer.Option("--near-copy-quantile", help="Near-copy threshold: this quantile "
                            "of real test -> real train nearest-neighbour distances.")] = 0.01,
    independent_model: Annotated[
        bool, typer.Option("--independent-model", help="Accept generators trained on another "
                           "dataset than --real (you vouch that they share no images).")] = False,
    benchmark: Annotated[
        bool, typer.Option("--benchmark/--no-benchmark", help="Run the downstream classifier "
                           "benchmark (the slow part).")] = True,
    clip: Annotated[
        Path | None, typer.Option("--clip", help="CLIP model folder (medsynth train --stage "
                                  "clip): adds in-domain FID/KID/precision/recall, image–text "
                                  "alignment vs shuffled text and real test retrieval.")] = None,
    clip_store: Annotated[
        Path | None, typer.Option("--clip-store", help="Store with descriptions of the real "
                                  "test images for --clip (default: the CLIP model's store).")] = None,
    device: DeviceOpt = "auto",
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads for torch (default: 1 for the "
                                 "small classifier, else torch's default).")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Processes for the classifier runs "
                                 "(default: $MEDSYNTH_THREADS or every CPU when each run takes "
                                 "one thread on the CPU, else 1). The figures do not depend on "
                                 "it.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed evaluation in "
                                         "--out (finished benchmark runs are kept).")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Benchmark a classifier on real vs real+synthetic vs synthetic data; FID/KID, privacy, report.

    Every figure comes with a 95 % paired bootstrap interval (test images and seeds), every gain
    with the smallest gain the set-up could detect; a verdict only when the interval excludes 0.

    Example: medsynth evaluate --real DATA --synthetic SYNTH --out REPORT --real-fraction 1.0,0.1
    --extra-real MORE_REAL
    """
    from medsynth.choices import comma_list
    from medsynth.evaluate.config import EvaluateConfig
    from medsynth.evaluate.run import run_evaluate
    from medsynth.ui import out as stdout

    cfg = EvaluateConfig(
        real=real, synthetic=[Path(p) for p in comma_list(synthetic)], out=out,
        classifier=classifier, seeds=seeds, real_fractions=comma_list(real_fraction),
        baselines=comma_list(baselines), extra_real=extra_real, bootstrap=bootstrap,
        size=size, epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
        max_synthetic_per_class=max_synthetic, feature_size=feature_size,
        near_copy_quantile=near_copy_quantile, independent_model=independent_model,
        benchmark=benchmark, clip=clip, clip_store=clip_store, device=device, threads=threads,
        workers=workers, resume=resume, overwrite=overwrite)
    manifest = run_evaluate(cfg)
    stdout.print(f"report: {Path(out) / manifest.outputs['report']}")


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the ``medsynth`` app."""
    app.command("evaluate", no_args_is_help=True)(evaluate_cmd)
