"""The report: plots (``plots.py``), a self-contained ``report.html`` rendered by Jinja2 from
``templates/`` with autoescape (context in ``report_context.py``) and the terminal summary
(``summary.py``).

Every plot is written to ``plots/<name>.png`` and embedded in the HTML as base64, so the single
``report.html`` file opens anywhere without its folder.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth.artifacts import atomic_write_text
from medsynth.evaluate.summary import print_summary

if TYPE_CHECKING:
    import jinja2

__all__ = ["print_summary", "render_section", "write_report"]


@cache
def environment() -> jinja2.Environment:
    """The templates of ``templates/`` (package data), every value HTML-escaped."""
    import jinja2

    from medsynth.evaluate.formatting import verdict_class

    env = jinja2.Environment(loader=jinja2.PackageLoader("medsynth.evaluate", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["verdict_class"] = verdict_class
    return env


def render_section(section: dict[str, Any]) -> str:
    """One section of the page alone (``section["template"]`` under ``templates/sections/``)."""
    return environment().get_template(f"sections/{section['template']}").render(section=section)


def write_report(out: Path, metrics: dict[str, Any], *, train: Any, test: Any,
                 synth: dict[str, Any], pdetails: dict[str, Any],
                 report_examples: list[dict[str, Any]] | None = None) -> list[str]:
    """Write every plot and ``report.html``; return the plot paths (relative to ``out``)."""
    from medsynth.evaluate.plots import plot_all
    from medsynth.evaluate.report_context import report_context

    plots = plot_all(out, metrics, train=train, test=test, synth=synth, pdetails=pdetails)
    ctx = report_context(out, metrics, plots, list(synth), report_examples)
    atomic_write_text(out / "report.html", environment().get_template("report.html").render(ctx))
    return sorted(plots.values())
