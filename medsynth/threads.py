"""CPU threads for torch: one default and one way to apply it, for every command that computes.

torch starts one thread per core. When another busy process shares those cores, its threads
wait on each other at every operation (spin-waiting in OpenMP barriers), and sampling fell to
5 % of its speed on a shared 2-core machine (0.6 vs 11.6 img/s). The default therefore takes the
cores that are free right now: the CPUs this process may run on, minus the 1-minute load
average (at least 1). ``--threads N`` overrides it; so does ``MEDSYNTH_THREADS=N`` in the
environment, for every command at once (the test suite sets it, so no test depends on the load).

Float sums depend on how the work is split over threads: the same image again is bitwise the
same only at the same thread count on the same hardware and software (docs/generate.md,
"Reproducibility"); generate records the threads and the device of every image.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the whole machine where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


ENV = "MEDSYNTH_THREADS"
TOLERANCE = 1e-3
"""Largest difference, on the model's [-1, 1] value range, between images of one seed made at
other thread counts, for the short deterministic chains the test suite checks (docs/generate.md,
"Reproducibility": longer chains can amplify the rounding differences)."""


def env_threads() -> int | None:
    """``MEDSYNTH_THREADS`` as a thread count (None when unset or empty)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        from medsynth.errors import BadUsageError

        raise BadUsageError(f"{ENV}={raw!r}: must be a whole number of threads >= 1")
    return int(raw)


def default_threads() -> int:
    """``MEDSYNTH_THREADS`` if set, else the free cores now: available CPUs minus the 1-minute
    load average, rounded, at least 1."""
    env = env_threads()
    if env is not None:
        return env
    cpus = available_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(cpus, round(cpus - load)))


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``n`` torch threads (None = :func:`default_threads`), then restore.

    Yields the number used. Restoring keeps in-process callers (tests, notebooks) unaffected.
    """
    import torch

    before = torch.get_num_threads()
    use = int(n) if n else default_threads()
    torch.set_num_threads(use)
    try:
        yield use
    finally:
        torch.set_num_threads(before)


def device_name(device: torch.device | str | int) -> str:
    """What computed, for the record: ``cpu`` or ``cuda:<card name>`` (reproducibility notes)."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return dev.type
