"""CPU threads for torch: one default and one way to apply it, for every command that computes.

torch starts one thread per core. When another busy process shares those cores, its threads
wait on each other at every operation (spin-waiting in OpenMP barriers), and sampling fell to
5 % of its speed on a shared 2-core machine (0.6 vs 11.6 img/s). The default therefore takes the
cores that are free right now: the CPUs this process may run on, minus the 1-minute load
average (at least 1). ``--threads N`` overrides it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the whole machine where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """Free cores now: available CPUs minus the 1-minute load average, rounded, at least 1."""
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
