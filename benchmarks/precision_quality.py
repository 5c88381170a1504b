"""bf16 autocast against fp32 training on the ``make demo`` recipe: same loss, same samples?

    .venv/bin/python -m benchmarks.precision_quality [--n 100] [--workdir W]
    .venv/bin/python -m benchmarks precision_quality

Trains examples/derm-demo.yaml twice on the same phantoms, descriptions and seed, with
``--mixed-precision no`` and ``bf16`` (fp32 master weights, bf16 autocast: on this CPU as on a
GPU), side by side with one torch thread each. Compared: the training loss (MSE term) over the
last 10 % of steps, and FID/KID/precision/coverage of the same sampling plan from both models,
scored in one ``medsynth evaluate --no-benchmark`` run against the real test split.

``--sampling MODEL`` instead compares the sampling precisions of one trained model (generate
``--precision fp32`` against ``bf16``, same plan, same seeds): the pixel differences of each
image pair, and FID (EfficientNet-Lite0 features, as evaluate) of both sets against the real
test split of ``--data``, with the 95 % bootstrap interval of the fp32 FID (test images and
synthetic images resampled together, same replicates for both sets):

    .venv/bin/python -m benchmarks.precision_quality --sampling MODEL --data DATA --n 170
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


def _pngs(root: Path, rels: list[str]) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    arr = [np.asarray(Image.open(root / r).convert("RGB"), dtype=np.float32) / 255.0 for r in rels]
    return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).contiguous()


def sampling_quality(model: Path, data: Path, n: int, root: Path, boot: int = 500
                     ) -> dict[str, Any]:
    """fp32 against bf16 sampling of one model: pixel differences and FID with its interval."""
    import time

    import numpy as np
    import pandas as pd
    import torch

    from benchmarks.speedinfo import speed_context
    from medsynth.evaluate.fidelity import fid
    from medsynth.imaging.dataset import open_dataset
    from medsynth.metrics.features import FeatureExtractor

    log = root / "log.txt"
    res: dict[str, Any] = {"model": str(model), "n_per_class": n, "sampler": "dpmsolver++",
                           "steps": 25, "guidance": 3.0, **speed_context()}
    sets = {}
    for p in ("fp32", "bf16"):
        out = root / f"sample-{p}"
        t0 = time.perf_counter()
        run_cli(["generate", str(model), "--class", "all", "--n", str(n), "--out", str(out),
                 "--format", "png", "--seed", "0", "--precision", p, "--report", "none",
                 "--resume"], log)
        table = pd.read_csv(out / "samples.csv")
        assert set(table["precision"]) == {p}, "the recorded precision is not what was asked"
        res[f"{p}_generate_wall_s"] = round(time.perf_counter() - t0, 1)
        sets[p] = _pngs(out, table["png"].tolist())
    diff = (sets["fp32"] - sets["bf16"]).abs() * 255  # in 8-bit levels
    res["pixel_diff_levels"] = {"mean": round(float(diff.mean()), 3),
                                "p99": round(float(torch.quantile(diff.flatten()[::7], 0.99)), 2),
                                "max": round(float(diff.max()), 1),
                                "share_identical": round(float((diff == 0).float().mean()), 4)}
    ds = open_dataset(data)
    test = ds.split("test")
    real = _pngs(ds.root, test["path"].tolist())
    fx = FeatureExtractor()
    f_real, f32, f16 = fx(real), fx(sets["fp32"]), fx(sets["bf16"])
    res["n_test"], res["n_synthetic"] = len(real), len(f32)
    res["fid_fp32"], res["fid_bf16"] = round(fid(f_real, f32), 3), round(fid(f_real, f16), 3)
    rng = np.random.default_rng(0)
    reps: dict[str, list[float]] = {"fp32": [], "bf16": [], "diff": []}
    for _ in range(boot):
        i = torch.as_tensor(rng.integers(0, len(f_real), len(f_real)))
        j = torch.as_tensor(rng.integers(0, len(f32), len(f32)))  # pairs kept: same seeds
        a, b = fid(f_real[i], f32[j]), fid(f_real[i], f16[j])
        reps["fp32"].append(a)
        reps["bf16"].append(b)
        reps["diff"].append(b - a)
    lo, hi = np.percentile(reps["fp32"], [2.5, 97.5])
    dlo, dhi = np.percentile(reps["diff"], [2.5, 97.5])
    res["fid_fp32_interval95"] = [round(float(lo), 3), round(float(hi), 3)]
    res["fid_bf16_minus_fp32_interval95"] = [round(float(dlo), 3), round(float(dhi), 3)]
    res["bf16_fid_within_fp32_interval"] = bool(lo <= res["fid_bf16"] <= hi)
    res["bootstrap_replicates"] = boot
    res["load_after"] = speed_context()["uptime"]
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="images per class per model")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--sampling", type=Path, help="trained model: compare fp32/bf16 sampling")
    ap.add_argument("--data", type=Path, help="--sampling: the dataset (its test split)")
    a = ap.parse_args(argv or [])
    if a.sampling:
        if not a.data:
            ap.error("--sampling needs --data")
        with tempfile.TemporaryDirectory() as t:
            res = sampling_quality(a.sampling, a.data, a.n, a.workdir or Path(t))
        record("precision_quality_sampling", res)
        return res
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
