"""bf16 autocast against fp32 training on the ``make demo`` recipe: same loss, same samples?

    .venv/bin/python -m benchmarks.precision_quality [--n 100] [--workdir W]
    .venv/bin/python -m benchmarks precision_quality

Trains examples/derm-demo.yaml twice on the same phantoms, descriptions and seed, with
``--mixed-precision no`` and ``bf16`` (fp32 master weights, bf16 autocast: on this CPU as on a
GPU), side by side with one torch thread each. Compared: the training loss (MSE term) over the
last 10 % of steps, and FID/KID/precision/coverage of the same sampling plan from both models,
scored in one ``medsynth evaluate --no-benchmark`` run against the real test split.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import demo_data, demo_model, record, run_cli, side_by_side

PRECISIONS = ("no", "bf16")


def tail_loss(model: Path, share: float = 0.1) -> dict[str, float]:
    with open(model / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tail = rows[-max(1, int(len(rows) * share)):]
    return {"mse_last10pct": round(statistics.mean(float(r["mse"]) for r in tail), 5),
            "loss_last10pct": round(statistics.mean(float(r["loss"]) for r in tail), 5),
            "images_per_s": round(statistics.median(float(r["images_per_s"]) for r in rows[1:]), 1),
            "train_s": round(float(rows[-1]["elapsed_s"]), 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="images per class per model")
    ap.add_argument("--workdir", type=Path)
    a = ap.parse_args(argv or [])
    tmp = None if a.workdir else tempfile.TemporaryDirectory()
    root = a.workdir or Path(tmp.name)  # type: ignore[union-attr]
    demo = root / "demo"
    data, _ = demo_data(demo)
    trained = side_by_side(lambda p: demo_model(demo, mixed_precision=p, threads=1),
                           list(PRECISIONS))
    log, sets, rows = root / "log.txt", [], {}
    for p in PRECISIONS:
        out = root / f"synth-{p}"
        run_cli(["generate", str(trained[p]["model"]), "--class", "all", "--n", str(a.n), "--out",
                 str(out), "--steps", "20", "--format", "png", "--seed", "0", "--resume"], log)
        sets.append(str(out))
        rows[p] = {**tail_loss(trained[p]["model"]), **({"peak_rss_mb": trained[p]["train"]
                                                         ["peak_rss_mb"]} if "train" in trained[p] else {})}
    rep = root / "precision-report"
    run_cli(["evaluate", "--real", str(data), "--synthetic", ",".join(sets), "--out", str(rep),
             "--no-benchmark", "--overwrite"], log)
    fid = json.loads((rep / "metrics.json").read_text())["fidelity"]
    by_name = {Path(k).name: v["overall"] for k, v in fid["sets"].items()}
    for p in PRECISIONS:
        s = by_name[f"synth-{p}"]
        rows[p].update(fid=s["fid"], kid=s["kid"], precision=s["precision"], coverage=s.get("coverage"))
    res = {"recipe": "examples/derm-demo.yaml (1500 steps, 32 px)", "n_per_class": a.n,
           "threads_each": 1, "load_average_1min": round(os.getloadavg()[0], 2),
           "fid_real_vs_real": fid["reference"]["overall"]["fid"],
           "fp32": rows["no"], "bf16": rows["bf16"],
           "bf16_vs_fp32_speed": round(rows["bf16"]["images_per_s"] / rows["no"]["images_per_s"], 2)}
    if tmp:
        tmp.cleanup()
    record("precision_quality", res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
