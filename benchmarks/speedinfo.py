"""What every speed figure is recorded with: threads, precision, the machine's load, bf16 units.

A figure from a loaded machine says so (``loaded``): compare only ratios timed side by side
(interleaved pairs) there, and re-run the printed command on an idle machine for the absolutes.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

LOADED = 0.5
"""1-minute load average (of other work, per core) above which a figure counts as loaded."""


def uptime() -> str:
    """``uptime``'s line (load averages over 1, 5 and 15 minutes), or the load averages."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def speed_context(threads: int | None = None, precision: str | None = None) -> dict[str, Any]:
    """Threads, precision, load (and whether it is loaded) and the CPU's bf16 support now."""
    import torch

    from medsynth.models.sampler import cpu_bf16_units
    from medsynth.threads import available_cpus

    load = os.getloadavg()
    cpus = available_cpus()
    ctx: dict[str, Any] = {
        "threads": int(threads or torch.get_num_threads()), "cpus": cpus,
        "load_average": [round(v, 2) for v in load], "uptime": uptime(),
        "loaded_machine": load[0] > LOADED * cpus,
        "cpu_bf16_units": cpu_bf16_units(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if precision is not None:
        ctx["precision"] = precision
    return ctx
