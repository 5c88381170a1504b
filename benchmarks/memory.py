"""Peak memory of ``generate`` at 500 and 5,000 images (must stay flat) and of training.

    .venv/bin/python -m benchmarks.memory [--model M] [--workdir W]
    .venv/bin/python -m benchmarks memory

Without ``--model`` it trains (or reuses, with the same ``--workdir``) the ``make demo`` model.
``generate`` runs with 2 DPM-Solver++ steps (memory does not depend on the step count, and 5,000
images at 20 steps would take 20 minutes here) and all three writers (PNG, DICOM, NIfTI); its
resident set size is sampled every 0.2 s from /proc, so the record shows the trend over the run,
not only the peak. Training: peak RSS of 200-step and 800-step runs of the demo recipe.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import demo_data, demo_model, record, run_cli

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--workdir", type=Path)
    a = ap.parse_args(argv or [])
    tmp = None if a.workdir else tempfile.TemporaryDirectory()
    root = a.workdir or Path(tmp.name)  # type: ignore[union-attr]
    threads = os.cpu_count() or 1
    model = a.model or demo_model(root / "demo", threads=threads)["model"]
    log = root / "memory-log.txt"
    gen: dict[str, Any] = {}
    for n in (500, 5000):
        per_class = -(-n // 3)
        out = root / f"mem-synth-{n}"
        gen[str(n)] = run_cli(["generate", str(model), "--class", "all", "--n", str(per_class),
                             "--out", str(out), "--steps", "2", "--format", "png,dicom,nifti",
                              "--overwrite"], log, threads, trace_rss=True)
        gen[str(n)]["images"] = per_class * 3
        print(n, gen[str(n)], flush=True)
    data, store = demo_data(root / "demo")
    train: dict[str, Any] = {}
    for steps in (200, 800):
        out = root / f"mem-train-{steps}"
        train[str(steps)] = run_cli(["train", str(data), "--store", str(store), "--out", str(out),
                                   "--config", str(ROOT / "examples" / "derm-demo.yaml"),
                                   "--max-steps", str(steps), "--sample-every", "0",
                                   "--threads", str(threads), "--overwrite"], log, threads, trace_rss=True)
        print(steps, train[str(steps)], flush=True)
    p500, p5000 = gen["500"]["peak_rss_mb"], gen["5000"]["peak_rss_mb"]
    res = {"threads": threads, "load_average_1min": round(os.getloadavg()[0], 2),
           "generate": gen, "generate_peak_growth_500_to_5000_mb": p5000 - p500,
           "train_demo_recipe": train}
    if tmp:
        tmp.cleanup()
    record("memory", res)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
