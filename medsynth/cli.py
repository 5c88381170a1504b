"""The ``medsynth`` command: parses options, builds a config, calls a stage, maps errors to exit codes.

Heavy libraries (torch, diffusers) are imported inside the stages, so ``medsynth --help`` is instant.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer._click import Context
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from medsynth import __version__

PIPELINE = ("data", "describe", "train", "generate", "judge", "refine", "evaluate")
"""The commands in the order a dataset goes through them (``medsynth --help`` lists them so)."""
_state = {"debug": bool(os.environ.get("MEDSYNTH_DEBUG"))}
# Our own rich progress bars report the work; the libraries' tqdm bars and info chatter
# ("Loading weights", dtype notes) would interleave with them.
for _k, _v in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
               ("DIFFUSERS_VERBOSITY", "error"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)
# Help is drawn by rich at the terminal's width: a terminal's own width is kept (wider lines
# would wrap every one of them there); piped, where there is no width, 100 columns fit every
# option name (rich's 80 cut long ones, "--max-synthetic-…"). COLUMNS or TERMINAL_WIDTH win.
if not os.environ.get("TERMINAL_WIDTH"):
    import shutil

    os.environ["TERMINAL_WIDTH"] = str(shutil.get_terminal_size((100, 24)).columns)


def _print_error(e: Exception) -> None:
    from medsynth.ui import console

    console.print("[bold red]error:[/] ", end="", soft_wrap=True)
    console.print(str(e), soft_wrap=True, markup=False)


def _out_arg(args: list[str]) -> str | None:
    """The value of ``--out``/``-o`` in a command line, if any."""
    for i, a in enumerate(args):
        if a in ("--out", "-o") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--out="):
            return a.split("=", 1)[1]
    return None


def _check_args(args: list[str]) -> None:
    """Refuse an argument that is not text before any work: bytes that are not UTF-8 reach
    Python as lone surrogates, which no journal, CSV or DICOM file can hold."""
    from medsynth.jsonl import check_text

    for a in args:
        check_text(a, f"command-line argument {a!r}")


class _Group(TyperGroup):
    """The one place where user errors become a one-line message and an exit code."""

    def list_commands(self, ctx: Context) -> list[str]:
        """Commands in pipeline order (``--help``), not registration order."""
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: PIPELINE.index(n) if n in PIPELINE else len(PIPELINE))

    def invoke(self, ctx: Context) -> Any:
        from medsynth.errors import MedsynthError

        # The command line left for the subcommand, kept to name --out in disk-full messages
        # from libraries that do not say which file they were writing.
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            _check_args(args)
            return super().invoke(ctx)
        except MedsynthError as e:
            if _state["debug"]:
                raise
            _print_error(e)
            raise typer.Exit(e.exit_code) from None
        except (ClickException, typer.Exit, typer.Abort):  # typer's own click (vendored), not click's
            raise
        except Exception as e:
            # Operating-system failures (read-only or full disk, permissions) are the user's to
            # fix: one line naming the path, not a traceback. Anything else is a bug.
            from medsynth.errors import os_error

            err = os_error(e, _out_arg(args))
            if err is None or _state["debug"]:
                raise
            _print_error(err)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            from medsynth.ui import console

            console.print("[yellow]interrupted[/]: finished work is kept; rerun with --resume to continue")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    name="medsynth",
    help="Synthetic labelled medical image datasets: data -> describe -> train -> generate -> "
         "judge -> refine -> evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medsynth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full Python tracebacks for errors (also MEDSYNTH_DEBUG=1).")
    ] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug


def _register() -> None:
    from medsynth.data.cli import data_app

    app.add_typer(data_app, name="data")
    for module in ("describe", "train", "generate", "judge", "refine", "evaluate"):
        try:
            mod = __import__(f"medsynth.{module}.cli", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"medsynth.{module}.cli" and e.name != f"medsynth.{module}":
                raise
            continue
        mod.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
