"""Quality of the CPU recipes at a fixed training budget, on the derm and cxr demo phantoms.

    .venv/bin/python -m benchmarks.recipe_quality [--budget-min 30] [--modality derm,cxr]
    .venv/bin/python -m benchmarks recipe_quality

For each modality, through the real CLI (one subprocess per stage, as a user runs it):
data demo (200 images/class at the recipe's size) -> describe (train split) -> a 40-step timing
run that sets ``--max-steps`` so that training fills the budget -> train (examples/<mod>-cpu.yaml)
-> generate (200 images/class, dpmsolver++ 20 steps) -> evaluate (3 seeds, all real and 10 %
real). The modalities run side by side, one torch thread each (2 cores). Recorded per modality:
FID/KID against the real-vs-real reference, precision/coverage, class fidelity, attribute
adherence, downstream gains with 95 % CIs, wall time and peak RSS of every stage.
``--workdir`` keeps the outputs (default: a temporary folder).
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

from benchmarks.common import RESULTS, fidelity_summary, record, run_cli, side_by_side

ROOT = Path(__file__).resolve().parent.parent


def train_rate(model: Path) -> float:
    with open(model / "train_log.csv", newline="") as f:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(f)]
    return statistics.median(rates[1:] or rates)


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    fid = metrics["fidelity"]
    s = next(iter(fid["sets"].values()))
    out: dict[str, Any] = {
        **fidelity_summary(metrics),
        "class_fidelity": (s.get("class_fidelity") or {}).get("overall"),
        "class_fidelity_real": (fid["reference"].get("class_fidelity") or {}).get("overall"),
    }
    adh = metrics.get("adherence") or {}
    aset = next(iter((adh.get("sets") or {}).values()), None)
    if aset:
        out["adherence"] = {"synthetic": aset.get("synthetic"), "shuffled": aset.get("shuffled"),
                            "real_measurement": adh.get("real"), "n": aset.get("n")}
    arms = []
    for a in (metrics.get("benchmark") or {}).get("arms", []):
        row = {"setting": a["setting"], "real": a["fraction"],
               "balanced_accuracy": a["metrics"]["balanced_accuracy"]}
        if "gain" in a:
            row["gain_balanced_accuracy"] = a["gain"]["balanced_accuracy"]
            row["verdict"] = a.get("verdict")
        arms.append(row)
    out["downstream"] = arms
    return out


def one(mod: str, root: Path, budget_min: float, threads: int, n_synth: int, seeds: int) -> dict[str, Any]:
    recipe = ROOT / "examples" / f"{mod}-cpu.yaml"
    import yaml

    size = int(yaml.safe_load(recipe.read_text())["size"])
    w, log = root / mod, root / f"{mod}.log"
    w.mkdir(parents=True, exist_ok=True)
    stages: dict[str, Any] = {}
    if not (w / "data" / "medsynth.json").exists():
        stages["data"] = run_cli(["data", "demo", mod, "--out", str(w / "data"), "--n-per-class", "200",
                              "--size", str(size), "--seed", "0"], log, threads)
    if not (w / "store" / "medsynth.json").exists():
        stages["describe"] = run_cli(["describe", str(w / "data"), "--out", str(w / "store"),
                                  "--split", "train"], log, threads)
    common = ["train", str(w / "data"), "--store", str(w / "store"), "--config", str(recipe),
              "--threads", str(threads)]
    if not (w / "model" / "unet").exists():
        stages["timing"] = run_cli([*common, "--out", str(w / "timing"), "--max-steps", "40",
                                "--checkpoint-every", "100000", "--sample-every", "0", "--overwrite"],
                               log, threads)
        rate = train_rate(w / "timing")
        batch = int(yaml.safe_load(recipe.read_text())["batch_size"])
        steps = int(budget_min * 60 * rate / batch * 0.95)
        resume = ["--resume"] if (w / "model" / "checkpoints").exists() else []
        stages["train"] = run_cli([*common, "--out", str(w / "model"), "--max-steps", str(steps),
                               "--checkpoint-every", "1000", *resume], log, threads)
        stages["train"].update(steps=steps, timing_images_per_s=round(rate, 1))
    stages["train_images_per_s"] = round(train_rate(w / "model"), 1)
    stages["generate"] = run_cli(["generate", str(w / "model"), "--class", "all", "--n", str(n_synth),
                              "--out", str(w / "synth"), "--steps", "20", "--format", "png",
                              "--resume"], log, threads)
    stages["evaluate"] = run_cli(["evaluate", "--real", str(w / "data"), "--synthetic", str(w / "synth"),
                              "--out", str(w / "report"), "--seeds", str(seeds),
                              "--real-fraction", "1.0,0.1", "--threads", str(threads), "--resume"],
                             log, threads)
    metrics = json.loads((w / "report" / "metrics.json").read_text())
    return {"recipe": f"examples/{mod}-cpu.yaml", "size_px": size, "budget_min": budget_min,
            "n_synthetic_per_class": n_synth, "seeds": seeds, "stages": stages,
            "quality": summarise(metrics)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-min", type=float, default=30.0)
    ap.add_argument("--modality", default="derm,cxr")
    ap.add_argument("--n-synth", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per modality (default: the cores shared between them)")
    a = ap.parse_args(argv)
    mods = a.modality.split(",")
    threads = a.threads or max(1, (os.cpu_count() or 1) // len(mods))
    tmp = None if a.workdir else tempfile.TemporaryDirectory()
    root = a.workdir or Path(tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    try:
        res: dict[str, Any] = side_by_side(
            lambda m: one(m, root, a.budget_min, threads, a.n_synth, a.seeds), mods)
    finally:
        if tmp:
            tmp.cleanup()
    res["setup"] = (f"{len(mods)} modalities side by side, {threads} torch thread(s) each, "
                    f"{a.budget_min:g} min training budget each")
    # A run of some modalities keeps the others' earlier results, marked with their date.
    old = RESULTS / "recipe_quality.json"
    if old.exists():
        prev = json.loads(old.read_text())
        for m, r in prev.get("results", {}).items():
            if m not in res and isinstance(r, dict):
                res[m] = {**r, "measured_earlier": prev.get("date"), "commit": prev.get("commit")}
    record("recipe_quality", res)
    return res


if __name__ == "__main__":
    main()
