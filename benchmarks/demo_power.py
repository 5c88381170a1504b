"""How tight is the demo's answer? Interval widths and power of ``make demo``'s evaluation.

    .venv/bin/python -m benchmarks.demo_power [--demo DIR]

Reads a finished demo folder (``scripts/demo.sh DIR``; default: runs the demo into
benchmarks/work/demo-power) and re-aggregates its benchmark runs, from their saved test
predictions, four ways:

* ``default``: what the demo reports (5 seeds, 300 test images per class, baselines): the gain of
  real+synthetic over real-only at 100 % and 10 % real data, its 95 % paired bootstrap interval
  and the smallest detectable gain;
* ``same_budget``: only the runs the old demo trained (real and real+synthetic at both fractions,
  synthetic-only; seeds 0 and 1: 10 classifier runs), with the new bootstrap on the big test set;
* ``old_method``: the same 10 runs with the old statistics (t-interval over the 2 seeds);
* ``old_test_size``: the same 10 runs, bootstrap, on 40 test images per class (the old split).

Classifier compute is the sum of the runs' training seconds (runs.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import record

ROOT = Path(__file__).resolve().parent.parent


def _runs(report: Path) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in map(json.loads, (report / "runs.jsonl").read_text().splitlines())}


def _gains(bench: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for a in bench["arms"]:
        if a.get("kind") == "synthetic" and "gain" in a:
            g = a["gain"]["balanced_accuracy"]
            out[a["fraction"]] = {
                "gain": round(g["mean"], 4), "lo": round(g["lo"], 4), "hi": round(g["hi"], 4),
                "half_width": round((g["hi"] - g["lo"]) / 2, 4),
                "detectable_gain": round(a["power"]["mde"], 4), "verdict": a["verdict"],
                "seed_sd": None if g["seeds"]["sd"] is None else round(g["seeds"]["sd"], 4)}
            if "vs_augment" in a:
                v = a["vs_augment"]["balanced_accuracy"]
                out[a["fraction"]]["vs_augment"] = [round(v[k], 4) for k in ("mean", "lo", "hi")]
            rec = a.get("oracle_recovery") or {}
            if rec.get("mean") is not None:
                out[a["fraction"]]["oracle_share"] = [round(rec[k], 3) for k in
                                                      ("mean", "lo", "hi")]
    return out


def analyse(demo: Path) -> dict[str, Any]:
    from medsynth.evaluate.benchmark import Arm, aggregate, read_predictions
    from medsynth.evaluate.config import parse_fraction
    from medsynth.evaluate.stats import seed_ci

    report = demo / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    bench = metrics["benchmark"]
    runs = _runs(report)
    classes = bench["classes"]
    import pandas as pd

    pred = pd.read_csv(next((report / "predictions").glob("*.csv")), dtype={"image_id": str})
    ids = pred["image_id"].tolist()
    y = np.array([classes.index(c) for c in pred["true"]])
    synth = next(a["synthetic"] for a in bench["arms"] if a.get("kind") == "synthetic")
    fr = [parse_fraction(f) for f in ("1.0", "0.1")]
    old_arms = [x for f in fr for x in (Arm("real", f, None, "real"),
                                        Arm(f"real+{synth}", f, synth, "synthetic"))]
    old_arms.append(Arm(synth, None, synth, "synthetic-only"))
    keys = [a.key(s) for a in old_arms for s in (0, 1)]
    probs = {k: read_predictions(report / "predictions" / f"{k}.csv", ids, classes) for k in keys}
    old_runs = {k: runs[k] for k in keys}
    same = aggregate(old_arms, old_runs, 2, classes, probs=probs, y=y)
    # The old test size: 40 images per class drawn from the 300.
    rng = np.random.default_rng(0)
    small = np.sort(np.concatenate([rng.permutation(np.nonzero(y == k)[0])[:40]
                                    for k in range(len(classes))]))
    small_runs = {}
    for k in keys:
        from medsynth.evaluate.stats import weighted_metrics

        m = weighted_metrics(probs[k][small], y[small], len(classes))
        small_runs[k] = {**runs[k], **{n: float(m[n][0]) for n in
                                       ("accuracy", "balanced_accuracy", "macro_f1", "auroc")}}
    small_agg = aggregate(old_arms, small_runs, 2, classes,
                          probs={k: v[small] for k, v in probs.items()}, y=y[small])
    old_method = {}
    for f in fr:
        d = [runs[Arm(f"real+{synth}", f, synth, "synthetic").key(s)]["balanced_accuracy"]
             - runs[Arm("real", f, None, "real").key(s)]["balanced_accuracy"] for s in (0, 1)]
        ci = seed_ci(d)
        old_method[f.label] = {"gain": round(ci["mean"], 4),
                               "half_width": round((ci["hi"] - ci["lo"]) / 2, 4)}
    seconds_all = sum(r["seconds"] for r in runs.values())
    return {
        "test_images": int(len(y)), "seeds": bench["seeds"],
        "default": {"gains": _gains(bench), "classifier_runs": len(runs),
                    "classifier_seconds": round(seconds_all, 1),
                    "converged_arms": sum(bool(a.get("converged")) for a in bench["arms"]),
                    "arms": len(bench["arms"])},
        "same_budget": {"gains": _gains(same), "classifier_runs": len(keys),
                        "classifier_seconds": round(sum(runs[k]["seconds"] for k in keys), 1)},
        "old_method": old_method,
        "old_test_size": {"test_images": int(len(small)), "gains": _gains(small_agg)},
        "evaluate_timings_s": metrics.get("timings_s"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=None,
                    help="a finished demo folder (default: run the demo into "
                         "benchmarks/work/demo-power)")
    a = ap.parse_args(argv or [])
    demo = a.demo
    if demo is None:
        import subprocess
        import sys

        demo = ROOT / "benchmarks" / "work" / "demo-power"
        subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(demo)], cwd=ROOT,
                       check=True, env={**os.environ,
                                        "MEDSYNTH": str(Path(sys.executable).parent / "medsynth")})
    res = analyse(demo)
    res["load_avg_at_end"] = round(os.getloadavg()[0], 2)
    record("demo_power", res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
