"""Checkpoint folders of the training loops (train's denoiser and autoencoder phases, refine).

A checkpoint is ``CKDIR/step-NNNNNNN/`` written as ``.step-NNNNNNN.part`` and renamed when whole;
its ``state.json`` is written last, so a folder without it is debris of a killed run and is
never resumed from. Also the seeded batch order every loop uses, so that a resumed run draws the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medsynth.artifacts import atomic_write_text
from medsynth.errors import MedsynthError

CKPT_PREFIX = "step-"


def complete_checkpoints(ckdir: Path) -> list[Path]:
    """Checkpoint folders with their ``state.json`` (written last), oldest first."""
    ckdir = Path(ckdir)
    if not ckdir.is_dir():
        return []
    found = [p for p in ckdir.iterdir()
             if p.is_dir() and p.name.startswith(CKPT_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def write_checkpoint(ckdir: Path, step: int, state: dict[str, Any], *, keep: int,
                     save: Callable[[Path], None], acc: Any = None) -> Path:
    """Write checkpoint ``step``: ``save(tmp)`` fills a temporary folder (with ``acc``, an
    accelerate ``Accelerator``, every process takes part and only the main one writes the rest),
    then ``state.json``, then the rename; only the newest ``keep`` checkpoints are kept."""
    main = acc is None or acc.is_main_process
    final = Path(ckdir) / f"{CKPT_PREFIX}{step:07d}"
    tmp = final.with_name(f".{final.name}.part")
    if main and tmp.exists():
        shutil.rmtree(tmp)
    if acc is not None:
        acc.wait_for_everyone()
    else:
        tmp.mkdir(parents=True)
    save(tmp)
    if acc is not None:
        # every rank's save_state (its RNG file) is in before the main process renames the folder
        acc.wait_for_everyone()
    if main:
        atomic_write_text(tmp / "state.json", json.dumps({"step": step, **state}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in complete_checkpoints(ckdir)[: -keep]:
            shutil.rmtree(old, ignore_errors=True)
    if acc is not None:
        acc.wait_for_everyone()
    return final


def read_checkpoint(ckpts: list[Path], load: Callable[[Path], None], *,
                    what: str = "checkpoint") -> dict[str, Any]:
    """``state.json`` of the newest of ``ckpts`` after ``load(folder)`` restored the rest; one
    line naming the folder when it is corrupt or does not fit (and what to do)."""
    last = ckpts[-1]
    try:
        state = json.loads((last / "state.json").read_text("utf-8"))
        load(last)
    except MedsynthError:
        raise
    except Exception as e:
        raise MedsynthError(
            f"{last}: {what} is corrupt or incompatible ({type(e).__name__}: {e})",
            hint=f"delete {last} to resume from the previous checkpoint" if len(ckpts) > 1
            else "start again with --overwrite") from None
    return dict(state)


def truncate_log(path: Path, fields: list[str], keep: Callable[[Mapping[str, str]], bool]
                 ) -> None:
    """Rewrite the CSV log at ``path`` (header ``fields``) with only the rows ``keep`` accepts:
    those the resumed-from checkpoint had logged, so the curve of a resumed run continues it."""
    rows: list[dict[str, str]] = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if keep(r)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class CsvLog:
    """A training loop's CSV log (train's denoiser, autoencoder and CLIP phases, refine): header
    ``fields``; :meth:`start` keeps the rows a resumed run had logged up to its checkpoint,
    :meth:`write` appends one row, closed at once, so a killed run loses no logged row.
    ``enabled=False`` (a process that is not the main one) writes nothing."""

    def __init__(self, path: Path, fields: list[str], *, enabled: bool = True,
                 ignore_extra: bool = False) -> None:
        self.path, self.fields, self.enabled = Path(path), list(fields), enabled
        self._extras = "ignore" if ignore_extra else "raise"

    def start(self, keep: Callable[[Mapping[str, str]], bool]) -> None:
        if self.enabled:
            truncate_log(self.path, self.fields, keep)

    def write(self, row: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields, extrasaction=self._extras).writerow(row)


def batch_indices(n: int, b: int, k: int, seed: int) -> Any:
    """Indices of (global micro-)batch ``k``: seeded epoch permutations, ``b`` distinct per
    batch (repeated when there are fewer than ``b`` items)."""
    import torch

    per_epoch = max(1, n // b)
    epoch, j = divmod(k, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    if n >= b:
        return perm[j * b : (j + 1) * b]
    return perm.repeat(math.ceil(b / n))[:b]
