"""``medsynth judge SYNTH --criteria FILE --out JUDGED``, ``judge show``, ``judge filter`` and
``judge validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup


class _DefaultRun(TyperGroup):
    """``medsynth judge SYNTH ...`` means ``medsynth judge run SYNTH ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


judge_app = typer.Typer(
    cls=_DefaultRun,
    help="Check synthetic images against per-class expert criteria (MAGIC), then filter.\n\n"
         "[bold]medsynth judge SYNTH --criteria FILE --out JUDGED[/] judges (the [bold]run[/] "
         "command is the default); [bold]medsynth judge show JUDGED[/] prints the scores; "
         "[bold]medsynth judge filter JUDGED --out SYNTH2[/] keeps the best images; "
         "[bold]medsynth judge validate DATA[/] checks a judge on held-out real images.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@judge_app.command("run")
def run_cmd(
    synth: Annotated[Path, typer.Argument(help="Synthetic set (`medsynth generate` or "
                                                "`judge filter` output).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Judged folder to write.")],
    criteria: Annotated[str | None, typer.Option(
        "--criteria", "-c", help="Criteria YAML (format in docs/judge.md), or a shipped name: "
                                 "derm, cxr. Needed by every judge but real-features.")] = None,
    backend: Annotated[str, typer.Option(
        help="Choices: measure (offline pixel measurements of medsynth's demo phantoms, the "
             "default; criteria it cannot measure are 'unsure') | real-features (offline, for "
             "real images: nearness to your real training images and a classifier fitted on "
             "them, see --real) | openai (any OpenAI-compatible server) | transformers (a "
             "local vision-language model, yes/no probabilities).")] = "measure",
    real: Annotated[Path | None, typer.Option(
        help="real-features: the dataset whose train split the judge is fitted on (default: "
             "the dataset the set's model trained on; its test split is never read).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model name (openai; else $MEDSYNTH_OPENAI_MODEL) or local path/name "
             "(transformers).")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (else "
             "$MEDSYNTH_OPENAI_BASE_URL). The API key is read only from "
             "$MEDSYNTH_OPENAI_API_KEY or $OPENAI_API_KEY.")] = None,
    concurrency: Annotated[int, typer.Option(
        help="Requests in flight (openai), questions per forward pass (transformers), worker "
             "processes (measure).")] = 4,
    mm_per_px: Annotated[float | None, typer.Option(
        help="Pixel size of the images in mm (default: from the dataset the model trained on, "
             "else the images' spacing, else the criteria file's field of view).")] = None,
    limit: Annotated[int | None, typer.Option(help="Judge at most N images (trial runs).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue a judged folder: judge exactly the images without a "
                         "verdict.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Delete an existing judged folder first.")] = False,
    max_reasks: Annotated[int, typer.Option(
        help="Re-ask an invalid answer this many times before recording the image as failed "
             "(openai).")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request (openai).")] = 120.0,
    request_retries: Annotated[int, typer.Option(
        help="HTTP retries on 429/5xx/timeouts, with exponential backoff (openai).")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit (openai).")] = 1024,
    structured_output: Annotated[str, typer.Option(
        help="openai: auto sends the class's JSON schema as response_format and falls back to "
             "prompted JSON when the server refuses it; off never sends it. Answers are "
             "validated either way.")] = "auto",
    min_mass: Annotated[float, typer.Option(
        help="transformers: 'unsure' when P(yes) + P(no) of the first answer token is below "
             "this.")] = 0.5,
    min_margin: Annotated[float, typer.Option(
        help="transformers: 'unsure' when |P(yes | yes or no) - 0.5| is below this.")] = 0.1,
) -> None:
    """Judge every image of SYNTH against its class's criteria into --out (one verdict per
    image and criterion, a weighted score; resumable, flushed per image).

    Only the synthetic images are sent to a model. Exits non-zero when images were tried and
    none was judged; finished verdicts are kept either way.
    """
    from medsynth.errors import MedsynthError
    from medsynth.judging.judged import JudgeConfig, run_judge
    from medsynth.judging.judges import JudgeSettings
    from medsynth.ui import console
    from medsynth.ui import out as stdout

    settings = JudgeSettings(
        backend=backend, model=model, base_url=base_url, concurrency=concurrency,
        timeout=timeout, request_retries=request_retries, max_reasks=max_reasks,
        max_new_tokens=max_new_tokens, structured_output=structured_output, min_mass=min_mass,
        min_margin=min_margin, real=str(real) if real else None)
    cfg = JudgeConfig(synth=str(synth), criteria=criteria, out=str(out), settings=settings,
                      mm_per_px=mm_per_px, limit=limit, resume=resume, overwrite=overwrite)
    s = run_judge(cfg)
    console.print(
        f"[bold green]judged[/] {s.judged}, [bold]failed[/] {s.failed} (raw answers kept), "
        f"[bold]skipped[/] {s.skipped} (already judged), [bold]errors[/] {s.errors} in "
        f"{s.seconds:.1f} s ({s.rate:.1f} img/s) · {s.backend} {s.model} · "
        f"{s.criteria_version} · {s.status}")
    for note in s.notices:
        console.print(f"  [yellow]note[/] {note}", markup=False)
    for msg in s.error_messages[:5]:
        console.print("  error ", msg, markup=False)
    for c, info in s.per_class.items():
        q = info["score_quantiles"] or [0] * 5
        stdout.print(f"  {c}: {info['n']} judged, score mean {info['score_mean'] or 0:.3f} "
                     f"(median {q[2]:.2f}), valid {100 * (info['valid'] or 0):.0f}%",
                     markup=False)
    if s.judged + s.failed == 0 and s.errors:
        raise MedsynthError(f"{out}: no image was judged ({s.errors} request(s) failed)",
                            hint="check the server and the messages above; rerun with --resume")
    if s.errors:
        console.print(f"[yellow]{s.errors} image(s) could not be judged; rerun with --resume "
                      "to judge them[/]")
    console.print(f"judged: {out}  ·  look at it with: medsynth judge show {out}")


@judge_app.command("validate")
def validate_cmd(
    data: Annotated[Path, typer.Argument(help="A real dataset (`medsynth data import` or "
                                              "`data demo` output) with train and held-out "
                                              "splits.")],
    backend: Annotated[str, typer.Option(
        help="Choices: real-features (fitted on DATA's train split) | measure (needs "
             "--criteria).")] = "real-features",
    criteria: Annotated[str | None, typer.Option(
        "--criteria", "-c", help="measure: criteria YAML or a shipped name (derm, cxr).")] = None,
    split: Annotated[str, typer.Option(
        help="The held-out split whose real images are judged (never used for fitting): test "
             "or val.")] = "test",
    limit: Annotated[int | None, typer.Option(
        help="Judge at most N held-out images per class (quick checks).")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write the numbers to this JSON file.")] = None,
) -> None:
    """How well a judge tells the classes apart on held-out REAL images of DATA: every image
    is scored against its own class and against every other class; AUROC own-class vs
    other-class (1 = perfect, 0.5 = chance), per class, the top-1 accuracy and the share of
    real images judged valid."""
    from medsynth.judge.validate import print_validation, validate_judge

    rep = validate_judge(data, backend=backend, criteria=criteria, split=split, limit=limit,
                         json_out=json_out)
    print_validation(rep)


@judge_app.command("show")
def show_cmd(
    judged: Annotated[Path, typer.Argument(help="Judged folder written by `medsynth judge`.")],
    n: Annotated[int, typer.Option(help="Worst and best images listed per class.")] = 3,
    cls: Annotated[str | None, typer.Option("--class", help="Only this class.")] = None,
) -> None:
    """Print the score distribution of each class and its worst and best images."""
    from medsynth.judge.show import print_show

    print_show(judged, n=n, cls=cls)


@judge_app.command("filter")
def filter_cmd(
    judged: Annotated[Path, typer.Argument(help="Judged folder written by `medsynth judge`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the filtered synthetic set.")],
    min_score: Annotated[float | None, typer.Option(
        help="Keep images whose score is at least S (0-1).")] = None,
    top_fraction: Annotated[float | None, typer.Option(
        help="Keep the best fraction F of each class (ceil(F * n) images).")] = None,
    per_class_n: Annotated[int | None, typer.Option(
        help="Keep exactly N images per class, the best ones (with --min-score: the best N "
             "that pass it; fewer is an error). After `generate --n N --oversample K` this "
             "gives exactly N per class.")] = None,
    per_request: Annotated[bool, typer.Option(
        "--per-request", help="Keep the best candidate of every requested image of a "
                              "`generate --oversample K` set: exactly --n per class, with the "
                              "requested descriptions.")] = False,
    skip_empty_requests: Annotated[bool, typer.Option(
        "--skip-empty-requests", help="With --per-request: leave out the requests none of "
                                      "whose candidates is valid (a weak model's class) "
                                      "instead of refusing; those classes get fewer images "
                                      "and the count left out is printed and recorded.")
    ] = False,
    copy: Annotated[bool, typer.Option(
        "--copy", help="Copy the image files instead of hard-linking them.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier filtered set in --out.")] = False,
) -> None:
    """Write the best-judged images of a judged set as a new synthetic set (evaluate, judge and
    refine read it like any other; its lineage runs through the judged folder)."""
    from medsynth.judge.filter import FilterConfig, filter_judged
    from medsynth.ui import out as stdout

    res = filter_judged(FilterConfig(judged=str(judged), out=str(out), min_score=min_score,
                                     top_fraction=top_fraction, per_class_n=per_class_n,
                                     per_request=per_request,
                                     skip_empty_requests=skip_empty_requests, copy=copy,
                                     overwrite=overwrite))
    kept = ", ".join(f"{c}: {k} of {res.offered.get(c, 0)}" for c, k in res.counts.items())
    stdout.print(f"{res.out}: kept {sum(res.counts.values())} image(s) ({kept}); "
                 f"{res.linked} file(s) hard-linked")
    if res.empty_requests:
        left = ", ".join(f"{c}: {n}" for c, n in res.empty_requests.items())
        stdout.print(f"left out {sum(res.empty_requests.values())} request(s) with no valid "
                     f"candidate ({left})")


def register(app: typer.Typer) -> None:
    """Add the ``judge`` command group to the ``medsynth`` app."""
    app.add_typer(judge_app, name="judge")
