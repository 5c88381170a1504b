"""`medsynth --help` start-up time (target: under 0.5 s)."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import record


def main() -> dict[str, float]:
    exe = shutil.which("medsynth") or str(Path(sys.executable).parent / "medsynth")
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        subprocess.run([exe, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    res = {"help_median_s": round(statistics.median(times), 3), "help_max_s": round(max(times), 3),
           "target_s": 0.5}
    record("startup", res)
    return res


if __name__ == "__main__":
    main()
