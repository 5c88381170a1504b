"""Effect of judge filtering and of refine (MAGIC), each against the unfiltered, unrefined model.

    .venv/bin/python -m benchmarks.refine_effect [--workdir benchmarks/work/refine] \
        [--model MODEL --data DATA --store STORE] [--n 50 --oversample 4] ...

Through the real CLI (one subprocess per stage, as a user runs it), on the derm demo (or
``--demo cxr``: the cxr phantoms, examples/cxr-cpu.yaml, the cxr criteria; recorded as
``refine_effect_cxr``):

1. a base model M0 (trained here with ``--train-steps`` if none is given; state its budget);
2. ``unfiltered`` (U): ``generate M0 --class all --n N --seed 0``: the baseline;
3. ``candidates``: the same plan with ``--oversample K`` (candidate 0 of each request is U's
   image), judged with the offline ``measure`` judge and the shipped criteria of the demo;
4. ``filtered`` (F): ``judge filter --per-request``: the best of the K candidates of every
   request (N per class, U's descriptions);
5. ``refined`` (R): ``refine M0 --judged candidates`` (DPO, LoRA), then U's plan (same
   descriptions, same seeds) with the refined model; optionally ``rwr`` (W) the same way;
6. every set judged (score distribution before/after) and evaluated in one ``medsynth
   evaluate`` (same real data, seeds and fractions for all);
7. comparisons with U: class fidelity = accuracy of evaluate's real-only classifier (not the
   judge) on each set, with a bootstrap interval of the difference (paired per request: same
   class, description and, for R and W, seed); FID and coverage with bootstrap intervals over synthetic images; the
   downstream balanced accuracy of real+X against real+U in the full and few-shot settings,
   paired by seed, with a bootstrap over seeds and test images.

Writes benchmarks/results/refine_effect.json (refine_effect_cxr.json with ``--demo cxr``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import record, run_cli

ROOT = Path(__file__).resolve().parent.parent
B = 2000  # bootstrap resamples


def _done(folder: Path) -> bool:
    return (folder / "medsynth.json").is_file()


def scores(judged: Path) -> dict[str, Any]:
    """Score distribution of a judged folder, overall and per class."""
    import pandas as pd

    t = pd.read_csv(judged / "scores.csv")
    t = t[t["status"] == "ok"] if "status" in t else t

    def dist(s: Any) -> dict[str, Any]:
        s = s.astype(float)
        return {"n": int(len(s)), "mean": round(float(s.mean()), 4),
                "quartiles": [round(float(q), 4) for q in np.quantile(s, [0.25, 0.5, 0.75])],
                "valid": round(float(t.loc[s.index, "image_valid"].astype(float).mean()), 4)}

    return {"overall": dist(t["score"]),
            "per_class": {str(c): dist(g["score"]) for c, g in t.groupby("class")}}


def _interval(values: np.ndarray) -> dict[str, float]:
    lo, hi = np.quantile(values, [0.025, 0.975])
    return {"lo": round(float(lo), 4), "hi": round(float(hi), 4)}


def class_fidelity(report: Path, sets: dict[str, Path], classes: list[str], size: int
                   ) -> dict[str, Any]:
    """Accuracy of evaluate's real-only classifier on each set; differences with U (bootstrap,
    paired per image when the plans match)."""
    import torch

    from medsynth.evaluate.classifier import build_classifier, predict_proba
    from medsynth.evaluate.inputs import load_synthetic
    from medsynth.synthset import open_synthetic

    state = torch.load(report / "classifiers" / "real-full-seed0.pt", map_location="cpu",
                       weights_only=True)
    correct: dict[str, np.ndarray] = {}
    keys: dict[str, list[tuple[str, int]]] = {}
    for name, path in sets.items():
        synth = open_synthetic(path)
        s = load_synthetic(synth, size, classes)
        net = build_classifier("small", int(s.x.shape[1]), len(classes), size)
        net.load_state_dict(state)
        p = predict_proba(net.eval(), s.x)
        c = (p.argmax(1) == s.y).numpy().astype(float)
        # pair by request: (class, request) of a filtered set = (class, index) of a plain one
        t = synth.table.set_index(synth.table["sample_id"].astype(str))
        col = "request" if "request" in t.columns and t["request"].notna().all() else "index"
        k = [(str(t.loc[i, "class"]), int(t.loc[i, col])) for i in s.ids]
        order = np.argsort([f"{a}\x00{b:09d}" for a, b in k])
        correct[name], keys[name] = c[order], [k[i] for i in order]
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {n: {"accuracy": round(float(c.mean()), 4),
                               **_interval(np.array([c[rng.integers(0, len(c), len(c))].mean()
                                                     for _ in range(B)]))}
                           for n, c in correct.items()}
    base = correct["unfiltered"]
    for name, c in correct.items():
        if name == "unfiltered":
            continue
        paired = keys[name] == keys["unfiltered"]
        if paired:
            idx = [rng.integers(0, len(c), len(c)) for _ in range(B)]
            diffs = np.array([c[i].mean() - base[i].mean() for i in idx])
        else:
            diffs = np.array([c[rng.integers(0, len(c), len(c))].mean()
                              - base[rng.integers(0, len(base), len(base))].mean()
                              for _ in range(B)])
        out[name]["diff_vs_unfiltered"] = {"mean": round(float(c.mean() - base.mean()), 4),
                                           "paired": paired, **_interval(diffs)}
    return out


def fidelity_intervals(real: Path, sets: dict[str, Path], classes: list[str], size: int
                       ) -> dict[str, Any]:
    """FID and coverage of each set against the real test split, with bootstrap intervals over
    the synthetic images (the real side fixed), and the difference with U."""
    import torch

    from medsynth.evaluate.features import FeatureExtractor
    from medsynth.evaluate.fidelity import fid, knn_manifold_metrics
    from medsynth.evaluate.inputs import load_real, load_synthetic
    from medsynth.imaging.dataset import open_dataset
    from medsynth.synthset import open_synthetic

    fx = FeatureExtractor(size=128)
    test = load_real(open_dataset(real), "test", size, classes)
    f_real = fx(test.x)
    feats = {n: fx(load_synthetic(open_synthetic(p), size, classes).x) for n, p in sets.items()}
    rng = np.random.default_rng(0)
    n_boot = 200  # FID on 1280-d features: a few ms each
    out: dict[str, Any] = {}
    boots: dict[str, dict[str, np.ndarray]] = {}
    for name, f in feats.items():
        idx = [torch.from_numpy(rng.integers(0, len(f), len(f))) for _ in range(n_boot)]
        fids = np.array([fid(f_real, f[i]) for i in idx])
        cov = np.array([knn_manifold_metrics(f_real, f[i])["coverage"] for i in idx])
        boots[name] = {"fid": fids, "coverage": cov}
        m = knn_manifold_metrics(f_real, f)
        out[name] = {"fid": round(float(fid(f_real, f)), 2), "fid_ci": _interval(fids),
                     "coverage": round(float(m["coverage"]), 4), "coverage_ci": _interval(cov),
                     "precision": round(float(m["precision"]), 4)}
    for name in feats:
        if name != "unfiltered":
            for k in ("fid", "coverage"):
                out[name][f"{k}_diff_vs_unfiltered"] = _interval(
                    boots[name][k] - boots["unfiltered"][k])
    return out


def downstream(report: Path, names: dict[str, str], classes: list[str]) -> dict[str, Any]:
    """Balanced accuracy of real+X against real+U (and against real), per fraction, with
    evaluate's own paired bootstrap (:class:`medsynth.evaluate.stats.Bootstrap`: the same test
    image resamples and seed draws for every arm; differences paired by seed)."""
    from medsynth.artifacts import read_jsonl
    from medsynth.evaluate.benchmark import RUNS_FILE, read_predictions
    from medsynth.evaluate.stats import Bootstrap, verdict

    runs = read_jsonl(report / RUNS_FILE)
    fracs = sorted({r["fraction"] for r in runs if r["setting"] == "real"}, reverse=True)
    seeds = sorted({r["seed"] for r in runs})
    key = {(r["setting"], r["fraction"], r["seed"]): r["key"] for r in runs}
    first = runs[0]["key"]
    import pandas as pd

    t = pd.read_csv(report / "predictions" / f"{first}.csv", dtype={"image_id": str})
    ids = t["image_id"].tolist()
    y = np.array([classes.index(c) for c in t["true"]])
    boot = Bootstrap(y, len(classes), len(seeds), n_boot=B)

    def arm(setting: str, frac: str) -> list[dict[str, Any]]:
        return [boot.run_metrics(key[(setting, frac, s)], read_predictions(
            report / "predictions" / f"{key[(setting, frac, s)]}.csv", ids, classes))
                for s in seeds]

    def short(iv: dict[str, Any]) -> dict[str, Any]:
        return {k: round(float(iv[k]), 4) for k in ("mean", "lo", "hi") if iv.get(k) is not None}

    out: dict[str, Any] = {}
    for frac in fracs:
        real = arm("real", frac)
        base = arm(f"real+{names['unfiltered']}", frac)
        entry: dict[str, Any] = {"real": short(boot.arm(real)["balanced_accuracy"])}
        for name, folder in names.items():
            a = arm(f"real+{folder}", frac)
            row: dict[str, Any] = {"balanced_accuracy": short(boot.arm(a)["balanced_accuracy"])}
            for ref_name, ref in (("vs_unfiltered", base), ("vs_real", real)):
                if name == "unfiltered" and ref_name == "vs_unfiltered":
                    continue
                g = boot.gain(a, ref)["balanced_accuracy"]
                row[ref_name] = {**short(g), "verdict": verdict(g)}
            entry[name] = row
        out[frac] = entry
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work" / "refine")
    ap.add_argument("--demo", choices=("derm", "cxr"), default="derm")
    ap.add_argument("--data", type=Path, help="demo dataset (default: WORKDIR/<demo>32)")
    ap.add_argument("--store", type=Path, help="its description store (default: WORKDIR/store)")
    ap.add_argument("--model", type=Path, help="base model (default: WORKDIR/model, trained)")
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--n", type=int, default=50, help="requested images per class (N)")
    ap.add_argument("--oversample", type=int, default=4, help="candidates per request (K)")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps (dpmsolver++)")
    ap.add_argument("--recipe", type=Path, default=ROOT / "examples" / "refine-cpu.yaml")
    ap.add_argument("--refine-steps", type=int, default=None)
    ap.add_argument("--beta", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--dpo-lr2", type=float, default=None,
                    help="also refine with DPO at this learning rate (set 'refined-lr<X>')")
    ap.add_argument("--rwr", action="store_true", help="also refine with rwr (baseline)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="also time an on-policy refine with this many rounds (0 = skip)")
    ap.add_argument("--rounds-steps", type=int, default=None, help="steps per round there")
    ap.add_argument("--rounds-lr", type=float, default=None, help="learning rate there")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fractions", default="1.0,0.1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baselines", default="augment", help="evaluate --baselines")
    ap.add_argument("--epochs", type=int, default=30, help="evaluate --epochs")
    ap.add_argument("--skip-downstream", default="",
                    help="comma-separated sets left out of the downstream benchmark (CPU time)")
    args = ap.parse_args(argv)
    args.skip_downstream = [x for x in args.skip_downstream.split(",") if x]
    w = args.workdir
    w.mkdir(parents=True, exist_ok=True)
    log = w / "bench.log"
    os.environ.setdefault("MEDSYNTH_NO_PROGRESS", "1")
    data, store = args.data or w / f"{args.demo}32", args.store or w / "store"
    t: dict[str, Any] = {}
    if not _done(data):
        t["data"] = run_cli(["data", "demo", args.demo, "--out", str(data), "--size", "32",
                             "--n-per-class", "200", "--seed", "0"], log)
    if not _done(store):
        t["describe"] = run_cli(["describe", str(data), "--out", str(store), "--split", "train"],
                                log)
    model = args.model or w / "model"
    if not _done(model):
        resume = ["--resume"] if (model / "checkpoints").is_dir() else []
        t["train"] = run_cli(["train", str(data), "--store", str(store), "--out", str(model),
                              "--config", str(ROOT / "examples" / f"{args.demo}-cpu.yaml"),
                              "--max-steps", str(args.train_steps), "--threads",
                              str(args.threads), *resume], log, args.threads)
    mm = json.loads((model / "medsynth.json").read_text())
    gen = ["--class", "all", "--n", str(args.n), "--seed", "0", "--steps", str(args.steps),
           "--threads", str(args.threads)]
    sets: dict[str, Path] = {}

    def generate(name: str, mdl: Path, k: int = 1) -> Path:
        out = w / f"synth-{name}"
        if not _done(out):
            t[f"generate_{name}"] = run_cli(["generate", str(mdl), "--out", str(out), *gen,
                                             "--oversample", str(k),
                                             *(["--resume"] if out.exists() else [])],
                                            log, args.threads)
        return out

    def judge(synth: Path) -> Path:
        out = Path(str(synth).replace("synth-", "judged-"))
        if not _done(out) or json.loads((out / "medsynth.json").read_text())["outputs"].get(
                "status") != "complete":
            t[f"judge_{synth.name}"] = run_cli(
                ["judge", "run", str(synth), "--criteria", args.demo, "--out", str(out),
                 *(["--resume"] if out.exists() else [])], log, args.threads)
        return out

    sets["unfiltered"] = generate("unfiltered", model)
    cand = generate("candidates", model, args.oversample)
    jc = judge(cand)
    filt = w / "synth-filtered"
    if not _done(filt):
        try:
            t["filter"] = run_cli(["judge", "filter", str(jc), "--per-request", "--out",
                                   str(filt)], log)
        except RuntimeError:
            # some request has no valid candidate (a weak model of a class): keep the best 1/K
            # of each class instead (fewer images where too few are valid; said in the results)
            t["filter"] = run_cli(["judge", "filter", str(jc), "--top-fraction",
                                   f"{1 / args.oversample:.6f}", "--out", str(filt)], log)
    filter_mode = json.loads((filt / "medsynth.json").read_text())["config"]
    sets["filtered"] = filt
    # (folder tag, set name, method, extra options)
    variants = [("dpo", "refined", "dpo", [])]
    if args.dpo_lr2 is not None:
        variants.append((f"dpo-lr{args.dpo_lr2:g}", f"refined-lr{args.dpo_lr2:g}", "dpo",
                         ["--lr", str(args.dpo_lr2)]))
    if args.rwr:
        variants.append(("rwr", "rwr", "rwr", []))
    refine_out: dict[str, Any] = {}
    for tag, name, method, extra in variants:
        mdir = w / f"model-{tag}"
        if not _done(mdir):
            opts = ["--config", str(args.recipe), "--method", method, "--threads",
                    str(args.threads)]
            for flag, v in (("--steps", args.refine_steps), ("--beta", args.beta),
                            ("--lr", args.lr)):
                if v is not None:
                    opts += [flag, str(v)]
            resume = ["--resume"] if (mdir / "refine_config.yaml").is_file() else []
            t[f"refine_{tag}"] = run_cli(["refine", str(model), "--judged", str(jc), "--out",
                                          str(mdir), *opts, *extra, *resume], log, args.threads)
        rm = json.loads((mdir / "medsynth.json").read_text())
        refine_out[tag] = {k: rm["outputs"].get(k) for k in
                           ("steps", "refine_time_s", "stop_reason", "round_summaries")}
        refine_out[tag]["lr"] = rm["config"].get("lr")
        sets[name] = generate(name, mdir)
    if args.rounds > 1:
        mdir = w / f"model-dpo-rounds{args.rounds}"
        if not _done(mdir):
            resume = ["--resume"] if (mdir / "refine_config.yaml").is_file() else []
            opts = [*(["--steps", str(args.rounds_steps)] if args.rounds_steps else []),
                    *(["--lr", str(args.rounds_lr)] if args.rounds_lr else [])]
            t["refine_rounds"] = run_cli(["refine", str(model), "--judged", str(jc), "--out",
                                          str(mdir), "--config", str(args.recipe), "--rounds",
                                          str(args.rounds), "--threads", str(args.threads),
                                          *opts, *resume], log, args.threads)
        rm = json.loads((mdir / "medsynth.json").read_text())
        refine_out[f"dpo_rounds{args.rounds}"] = {
            k: rm["outputs"].get(k) for k in ("steps", "refine_time_s", "stop_reason",
                                              "round_summaries")}
        refine_out[f"dpo_rounds{args.rounds}"]["lr"] = rm["config"].get("lr")
    judged_scores = {"candidates": scores(jc)}
    for name, s in sets.items():
        if name != "filtered":
            judged_scores[name] = scores(judge(s))
    report = w / "report"
    names = [n for n in sets if not args.skip_downstream or n not in args.skip_downstream]
    if not _done(report):
        t["evaluate"] = run_cli(["evaluate", "--real", str(data), "--synthetic",
                                 ",".join(str(sets[n]) for n in names), "--out", str(report),
                                 "--seeds", str(args.seeds), "--real-fraction", args.fractions,
                                 "--threads", str(args.threads), "--baselines", args.baselines,
                                 "--epochs", str(args.epochs),
                                 *(["--resume"] if report.exists() else [])], log, args.threads)
    classes = list(mm["outputs"]["classes"])
    metrics = json.loads((report / "metrics.json").read_text())
    t0 = time.perf_counter()
    fidelity = class_fidelity(report, sets, classes, 32)
    fi = fidelity_intervals(data, sets, classes, 32)
    ds = downstream(report, {n: sets[n].name for n in names}, classes)
    load = os.getloadavg()
    record("refine_effect" if args.demo == "derm" else f"refine_effect_{args.demo}", {
        "demo": args.demo,
        "setup": {"base_model": str(model), "base_steps": mm["outputs"].get("steps"),
                  "base_train_time_s": mm["outputs"].get("train_time_s"),
                  "n_per_class": args.n, "oversample": args.oversample,
                  "sampling_steps": args.steps, "recipe": str(args.recipe.relative_to(ROOT)),
                  "refine_overrides": {"steps": args.refine_steps, "beta": args.beta,
                                       "lr": args.lr},
                  "filter": {k: filter_mode.get(k) for k in ("per_request", "top_fraction")},
                  "set_counts": {n: json.loads((p / "medsynth.json").read_text())["outputs"].get(
                      "counts") for n, p in sets.items()},
                  "seeds": args.seeds, "fractions": args.fractions, "threads": args.threads,
                  "evaluate": {"baselines": args.baselines, "epochs": args.epochs,
                               "downstream_sets": names},
                  "load_average": [round(x, 2) for x in load]},
        "class_fidelity": fidelity,
        "class_fidelity_real_test": (metrics["fidelity"]["reference"].get("class_fidelity")
                                     or {}).get("overall"),
        "fidelity": fi,
        "fidelity_reference": {k: metrics["fidelity"]["reference"]["overall"].get(k)
                               for k in ("fid", "coverage", "precision")},
        "judge_scores": judged_scores,
        "downstream": ds,
        "refine": refine_out,
        "stage_times": t,
        "analysis_s": round(time.perf_counter() - t0, 1),
    })


if __name__ == "__main__":
    main()
