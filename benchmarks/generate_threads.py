"""Sampling speed by torch thread count, alone and beside a busy process (generate --threads).

    .venv/bin/python -m benchmarks.generate_threads [--steps 10] [--batch 16] [--seconds 20]
    .venv/bin/python -m benchmarks generate_threads

The denoiser is the CPU derm recipe's network (32 px RGB, random weights: speed does not depend
on them) in medsynth's own loop (:func:`medsynth.models.sampler.denoise`, dpmsolver++, CFG).
For each thread count (1, every CPU = torch's default, and medsynth's default
:func:`medsynth.threads.default_threads` as chosen at that moment) it measures images/s twice:
with the machine as it is, and beside a "neighbour", a second process doing float32 matmuls with
torch's default thread count (what another training or sampling job does). The load average is
recorded before each measurement (the machine may be shared). Results:
benchmarks/results/generate_threads.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import record

NEIGHBOUR = ("import torch, time\n"
             "a = torch.randn(768, 768); b = torch.randn(768, 768)\n"
             "t = time.time()\n"
             "while time.time() - t < {seconds}:\n"
             "    a @ b\n")


def _speed(threads: int, steps: int, batch: int, seconds: float) -> float:
    """Images/s of the recipe network at ``threads`` threads (best of repeated batches)."""
    import torch

    from benchmarks.sample_speed import SCHEDULE, _recipe_unet
    from medsynth.models.sampler import denoise, make_scheduler

    torch.set_num_threads(threads)
    unet = _recipe_unet()
    sched = make_scheduler("dpmsolver++", SCHEDULE)
    hidden = torch.randn(batch, 16, 384)
    mask = torch.ones(batch, 16, dtype=torch.long)
    null_h, null_m = torch.zeros(1, 1, 384), torch.ones(1, 1, dtype=torch.long)

    def run(k: int) -> None:
        denoise(unet, sched, class_ids=[0] * batch, text_hidden=hidden, text_mask=mask,
                null_class=3, null_hidden=null_h, null_mask=null_m, seeds=list(range(batch)),
                sample_shape=(3, 32, 32), steps=k, guidance=3.0)

    run(1)  # warm-up
    best, t_end = 0.0, time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        run(steps)
        best = max(best, batch / (time.perf_counter() - t0))
        if time.perf_counter() > t_end:
            return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from medsynth.threads import available_cpus, default_threads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring time per setting")
    args = ap.parse_args(argv or [])
    cpus = available_cpus()
    rows: list[dict[str, Any]] = []
    for neighbour in (False, True):
        proc = None
        if neighbour:
            proc = subprocess.Popen([sys.executable, "-c", NEIGHBOUR.format(seconds=10_000)])
            time.sleep(5)  # let it spin up (and the load average notice it a little)
        try:
            for label in ("1", "all CPUs (torch default)", "medsynth default"):
                n = 1 if label == "1" else cpus if label.startswith("all") else default_threads()
                load = os.getloadavg()[0]
                ips = _speed(n, args.steps, args.batch, args.seconds)
                rows.append({"neighbour": neighbour, "threads": label, "n_threads": n,
                             "load_before": round(load, 2), "images_per_s": round(ips, 2)})
                print(rows[-1], flush=True)
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
    results = {"cpus": cpus, "steps": args.steps, "batch": args.batch,
               "network": "derm-cpu recipe UNet, 32 px RGB, dpmsolver++ with CFG", "runs": rows}
    record("generate_threads", results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
