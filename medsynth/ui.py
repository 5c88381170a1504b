"""Terminal output shared by the commands: one rich console and a progress bar with rate and ETA."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def progress_bar(*extra_columns: object, transient: bool = False) -> Progress:
    """A progress bar: description, bar, n/total, %, items/s, elapsed, ETA (+ extra columns)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        *extra_columns,  # type: ignore[arg-type]
        console=console,
        transient=transient,
        disable=bool(os.environ.get("MEDSYNTH_NO_PROGRESS")),
    )


def track(items: Iterable[T], description: str = "working", total: int | None = None,
          unit: str = "img") -> Iterator[T]:
    """Iterate with a progress bar that shows the rate in ``unit``/s and the ETA."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar() as bar:
        task = bar.add_task(description, total=total, rate="")
        for item in items:
            yield item
            bar.advance(task)
            speed = bar.tasks[0].speed
            if speed:
                bar.update(task, rate=f"{speed:.1f} {unit}/s")
