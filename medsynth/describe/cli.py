"""``medsynth describe DATASET --out STORE`` and ``medsynth describe show STORE``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup


class _DefaultRun(TyperGroup):
    """``medsynth describe DATASET ...`` means ``medsynth describe run DATASET ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


describe_app = typer.Typer(
    cls=_DefaultRun,
    help="Chain-of-thought visual descriptions of every image, stored per class (VAP-Diffusion).\n\n"
         "[bold]medsynth describe DATASET --out STORE[/] describes (the [bold]run[/] command is the "
         "default); [bold]medsynth describe show STORE[/] prints what a store holds.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@describe_app.command("run")
def run_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder written by `medsynth data`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store folder to write.")],
    backend: Annotated[str, typer.Option(
        help="attributes (offline pixel measurements, the default) | openai (any OpenAI-compatible "
             "server) | transformers (a local vision-language model).")] = "attributes",
    model: Annotated[str | None, typer.Option(
        help="Model name (openai; else $MEDSYNTH_OPENAI_MODEL) or local path/name (transformers).")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (else "
             "$MEDSYNTH_OPENAI_BASE_URL). The API key is read only from $MEDSYNTH_OPENAI_API_KEY "
             "or $OPENAI_API_KEY.")] = None,
    modality: Annotated[str, typer.Option(
        help="Prompt template: derm | cxr | colon | mri | prostate | ct | auto (from the dataset's modality; MR volumes of prostate classes: prostate, CT: ct).")] = "auto",
    template: Annotated[Path | None, typer.Option(
        help="Your own template YAML (format in docs/describe.md); overrides --modality.")] = None,
    split: Annotated[str | None, typer.Option(
        help="Split to describe: train | val | test | all. Default: train when the dataset has a "
             "train split (the images generate conditions on), else all.",
        show_default=False)] = None,
    concurrency: Annotated[int, typer.Option(
        help="Requests in flight (openai), batch size (transformers), worker processes "
             "(attributes).")] = 4,
    limit: Annotated[int | None, typer.Option(help="Describe at most N images (trial runs).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue a store: skip images this backend and model already described.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete an existing store first.")] = False,
    max_reasks: Annotated[int, typer.Option(
        help="Re-ask an invalid answer this many times before recording it as failed.")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request (openai).")] = 120.0,
    request_retries: Annotated[int, typer.Option(
        help="HTTP retries on 429/5xx/timeouts, with exponential backoff (openai).")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit (model backends).")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.0,
    structured_output: Annotated[str, typer.Option(
        help="openai: auto sends the answer's JSON schema as response_format and falls back to "
             "prompted JSON when the server refuses it; off never sends it. Answers are "
             "validated either way.")] = "auto",
) -> None:
    """Describe every image of DATASET into the store --out (resumable, appended per record).

    Exits non-zero when images were tried and none was described (server down, every answer
    invalid); finished records are kept either way.
    """
    from medsynth.describe.config import DescribeConfig
    from medsynth.describe.run import run_describe
    from medsynth.errors import MedsynthError
    from medsynth.ui import console

    cfg = DescribeConfig(
        dataset=str(dataset), out=str(out), backend=backend, model=model, base_url=base_url,
        modality=modality, template=str(template) if template else None, split=split,
        concurrency=concurrency, limit=limit, resume=resume, overwrite=overwrite,
        max_reasks=max_reasks, timeout=timeout, request_retries=request_retries,
        max_new_tokens=max_new_tokens, temperature=temperature,
        structured_output=structured_output)
    s = run_describe(cfg)
    console.print(
        f"[bold green]described[/] {s.described}, [bold]failed[/] {s.failed} (raw answers kept), "
        f"[bold]skipped[/] {s.skipped} (already in the store), [bold]errors[/] {s.errors} "
        f"in {s.seconds:.1f} s ({s.rate:.1f} img/s) · split {s.split} · {s.backend} {s.model} · "
        f"{s.template_version}")
    for note in s.notices:
        console.print(f"  [yellow]note[/] {note}", markup=False)
    for msg in s.error_messages[:5]:
        console.print("  error ", msg, markup=False)
    if s.nothing_described:
        what = (f"{s.errors} request(s) failed" if s.errors else "") + \
            (" and " if s.errors and s.failed else "") + \
            (f"{s.failed} answer(s) stayed invalid after re-asking" if s.failed else "")
        raise MedsynthError(f"{out}: no image was described ({what})",
                            hint="check the server, the model and the messages above; rerun "
                                 "with --resume to try the failed requests again")
    if s.errors:
        console.print(f"[yellow]{s.errors} image(s) could not be described; rerun with --resume "
                      "to try them again[/]")
    console.print(f"store: {out}  ·  look at it with: medsynth describe show {out}")


@describe_app.command("show")
def show_cmd(
    store: Annotated[Path, typer.Argument(help="Store folder written by `medsynth describe`.")],
    cls: Annotated[str | None, typer.Option("--class", help="Only this class.")] = None,
    n: Annotated[int, typer.Option(help="Descriptions to print per class.")] = 3,
    backend: Annotated[str | None, typer.Option(help="Only records of this backend.")] = None,
    top: Annotated[int, typer.Option(help="Most frequent values shown per attribute.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed for picking the example descriptions.")] = 0,
) -> None:
    """Print a few descriptions and the attribute frequencies of each class."""
    import random

    from rich.table import Table

    from medsynth.describe.run import split_numeric
    from medsynth.store import open_store, summarize_records
    from medsynth.ui import out as stdout

    st = open_store(store)
    classes = [cls] if cls else st.classes
    runs = st.manifest.outputs.get("runs", [])
    stdout.print(f"[bold]{store}[/] · status {st.manifest.outputs.get('status', '?')} · "
                 + ", ".join(f"{r.get('backend')} ({r.get('model')}, {r.get('template_version')})"
                             for r in runs))
    rng = random.Random(seed)
    for c in classes:
        recs = st.records(c, status=None, backend=backend)
        ok = [r for r in recs if r.status == "ok"]
        summ = split_numeric(summarize_records(recs), recs)
        stdout.rule(f"[bold]{c}[/]: {summ['n_ok']} described, {summ['n_failed']} failed")
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("attribute")
        table.add_column("most frequent values (count)")
        for name, freq in summ["attributes"].items():
            vals = ", ".join(f"{k} ({v})" for k, v in list(freq.items())[:top])
            more = len(freq) - top
            table.add_row(name, vals + (f", ... +{more}" if more > 0 else ""))
        for name, st_ in summ["numeric"].items():
            table.add_row(name, f"mean {st_['mean']:.3g} (sd {st_['sd']:.2g}), median "
                                f"{st_['median']:.3g}, range {st_['min']:.3g}-{st_['max']:.3g}")
        stdout.print(table)
        for r in rng.sample(ok, min(n, len(ok))):
            stdout.print(f"  • [dim]{r.image_id}[/] {r.text}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``describe`` command group to the main app."""
    app.add_typer(describe_app, name="describe")
