"""The in-domain CLIP model (issue 18): retrieval, alignment, and its FID ranking vs Lite0's.

    .venv/bin/python -m benchmarks.clip [--workdir W] [--demos derm,cxr] [--series derm]
        [--n-per-class 200] [--size 32] [--clip-steps 1000] [--series-n 60] [--threads 1]
        [--series-model MODEL --series-store STORE] [--series-settings dpmsolver++:10,ddpm:50]
    .venv/bin/python -m benchmarks clip

For each demo (real CLI runs, as a user would): phantoms -> ``describe --split all`` (the
offline attributes backend; train texts train the model, val texts choose its step, test texts
are only for the measurement) -> ``train --stage clip`` -> on the real **test** pairs:
image->text and text->image recall@1/5 against chance and against a class-only ranker, and the
alignment (cosine of an image with its own description) against shuffled descriptions.

For each ``--series`` demo: a diffusion model (the ``make demo`` recipe) generates the same plan
with several samplers and step counts (a quality series from one model); one ``evaluate
--no-benchmark --clip`` scores every set with both feature spaces; the benchmark reports each
space's FID ranking of the sets and their Spearman and Kendall rank agreement, plus the
alignment of every synthetic set with the text that conditioned it (matched vs shuffled).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import record, run_cli

SERIES = [("dpmsolver++", 5), ("dpmsolver++", 10), ("dpmsolver++", 20), ("dpmsolver++", 50),
          ("ddim", 10), ("ddpm", 50), ("ddpm", 250)]
"""The quality series of one model: few to many solver steps, and DDPM's ancestral sampler
(poor at 50 steps, the reference at 250)."""
SERIES_RECIPE = "examples/derm-demo.yaml"
"""Diffusion recipe of a series: the make-demo recipe (1500 steps at 32 px; no flips for cxr,
which the recipe's ``auto`` flips decide from the modality)."""


def _data(root: Path, demo: str, n: int, size: int, log: Path) -> tuple[Path, Path]:
    data, store = root / "data", root / "store"
    if not (data / "medsynth.json").exists():
        run_cli(["data", "demo", demo, "--out", str(data), "--n-per-class", str(n), "--size",
                 str(size), "--seed", "0"], log)
    if not (store / "medsynth.json").exists():
        run_cli(["describe", str(data), "--out", str(store), "--split", "all", "--resume"], log)
    return data, store


def _clip(root: Path, data: Path, store: Path, steps: int, threads: int, log: Path
          ) -> dict[str, Any]:
    out = root / "clip"
    res: dict[str, Any] = {}
    if not (out / "medsynth.json").exists():
        resume = ["--resume"] if (out / "checkpoints").exists() else []
        res = run_cli(["train", str(data), "--stage", "clip", "--store", str(store), "--out",
                       str(out), "--max-steps", str(steps), "--threads", str(threads), *resume],
                      log, threads)
    m = json.loads((out / "medsynth.json").read_text())
    return {"folder": str(out), "wall_s": res.get("wall_s"), "peak_rss_mb": res.get("peak_rss_mb"),
            "train_seconds": m["outputs"]["train_seconds"], "step": m["outputs"]["step"],
            "max_steps": m["outputs"]["max_steps"], "n_train_pairs": m["outputs"]["n_train_pairs"],
            "n_val_pairs": m["outputs"]["n_val_pairs"], "val": _round(m["outputs"]["val"])}


def _round(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _round(v) for k, v in d.items()}
    return round(d, 4) if isinstance(d, float) else d


def real_test_figures(clip_dir: Path, data: Path, store: Path) -> dict[str, Any]:
    """Retrieval and alignment of the real test pairs (the library calls evaluate makes)."""
    from medsynth.evaluate.clip_features import alignment, real_texts
    from medsynth.evaluate.inputs import load_real
    from medsynth.imaging.dataset import open_dataset
    from medsynth.models.clip import load_clip, retrieval_recall

    clip = load_clip(clip_dir)
    real = open_dataset(data)
    test = load_real(real, "test", clip.info.spec.size, real.classes)
    texts_by_id, _ = real_texts(clip, store, real)
    rows = [i for i, iid in enumerate(test.ids) if iid in texts_by_id]
    texts = [texts_by_id[test.ids[i]] for i in rows]
    labels = [real.classes[int(test.y[i])] for i in rows]
    img = clip.embed_images(test.x[rows])
    txt = clip.embed_texts(texts)
    return {"retrieval": _round(retrieval_recall(img, txt, texts, labels=labels)),
            "alignment": _round(alignment(img, txt, texts, labels))}


def test_overlap(data: Path, model: Path) -> dict[str, Any]:
    """How many of ``data``'s test images (by file content) the model trained on (its dataset's
    training splits), for a reused model trained on another dataset (demo labels.csv layout)."""
    import hashlib

    import pandas as pd

    def digests(root: Path) -> pd.DataFrame:
        df = pd.read_csv(root / "labels.csv")
        df["sha"] = [hashlib.sha256((root / p).read_bytes()).hexdigest() for p in df["path"]]
        return df

    mm = json.loads((model / "medsynth.json").read_text())
    src = next(Path(r["path"]) for r in mm["inputs"] if r.get("stage") == "data")
    splits = mm["config"].get("train_splits") or ["train"]
    ours, theirs = digests(data), digests(src)
    seen = set(theirs.loc[theirs["split"].isin(splits), "sha"])
    test = ours.loc[ours["split"] == "test", "sha"]
    return {"model_dataset": str(src), "model_train_splits": splits, "n_test": int(len(test)),
            "n_test_in_model_training": int(test.isin(seen).sum())}


def series(root: Path, data: Path, store: Path, clip_dir: Path, *, recipe: str, n: int,
           threads: int, settings: list[tuple[str, int]], log: Path,
           steps: int | None = None, model_store: Path | None = None,
           independent: bool = False) -> dict[str, Any]:
    """Generate the sampler series from one diffusion model; score it in both spaces."""
    from scipy.stats import kendalltau, spearmanr

    repo = Path(__file__).resolve().parent.parent
    model = root / "model"
    train: dict[str, Any] = {}
    if not (model / "medsynth.json").exists():
        resume = ["--resume"] if (model / "checkpoints").exists() else []
        budget = ["--max-steps", str(steps)] if steps else []
        train = run_cli(["train", str(data), "--store", str(store), "--out", str(model),
                         "--config", str(repo / recipe), "--threads", str(threads), *budget,
                         *resume], log, threads)
    rows, sets = [], []
    for sampler, steps in settings:
        name = f"{sampler.replace('++', 'pp')}-{steps}"
        out = root / name
        r: dict[str, Any] = {"wall_s": None}
        if not (out / "medsynth.json").exists():
            r = run_cli(["generate", str(model), "--class", "all", "--n", str(n), "--out",
                         str(out), "--sampler", sampler, "--steps", str(steps), "--format",
                         "png", "--seed", "0", "--threads", str(threads), "--resume",
                         *(["--store", str(model_store)] if model_store else [])],
                        log, threads)
        rows.append({"set": name, "sampler": sampler, "steps": steps,
                     "generate_wall_s": r["wall_s"]})
        sets.append(str(out))
    rep = root / "report"
    t0 = time.perf_counter()
    run_cli(["evaluate", "--real", str(data), "--synthetic", ",".join(sets), "--out", str(rep),
             "--no-benchmark", "--clip", str(clip_dir), "--overwrite", "--threads",
             str(threads), *(["--independent-model"] if independent else [])], log, threads)
    eval_s = round(time.perf_counter() - t0, 1)
    m = json.loads((rep / "metrics.json").read_text())
    lite, cl = m["fidelity"], m["clip"]
    for r in rows:
        a, b = lite["sets"][r["set"]]["overall"], cl["fidelity"]["sets"][r["set"]]["overall"]
        al = cl["alignment"]["sets"][r["set"]]
        r.update(lite0_fid=a["fid"], lite0_kid=a["kid"], lite0_coverage=a["coverage"],
                 clip_fid=b["fid"], clip_kid=b["kid"], clip_coverage=b["coverage"],
                 align_matched=al.get("matched"),
                 align_shuffled=(al.get("shuffled") or {}).get("mean"),
                 align_gap=(al.get("shuffled") or {}).get("gap"),
                 align_gap_ci=[(al.get("shuffled") or {}).get("gap_lo"),
                               (al.get("shuffled") or {}).get("gap_hi")],
                 align_same_class_gap=(al.get("shuffled_same_class") or {}).get("gap"),
                 align_same_class_gap_ci=[(al.get("shuffled_same_class") or {}).get("gap_lo"),
                                          (al.get("shuffled_same_class") or {}).get("gap_hi")])

    def order(key: str) -> list[str]:
        return [r["set"] for r in sorted(rows, key=lambda r: r[key])]

    agree = {}
    for metric, lo_better in (("fid", True), ("kid", True), ("coverage", False)):
        x = [r[f"lite0_{metric}"] for r in rows]
        y = [r[f"clip_{metric}"] for r in rows]
        rho, p_rho = spearmanr(x, y)
        tau, p_tau = kendalltau(x, y)
        agree[metric] = {"spearman": round(float(rho), 3), "spearman_p": round(float(p_rho), 4),
                         "kendall": round(float(tau), 3), "kendall_p": round(float(p_tau), 4),
                         "lite0_order": order(f"lite0_{metric}")[:: 1 if lo_better else -1],
                         "clip_order": order(f"clip_{metric}")[:: 1 if lo_better else -1]}
    ref_l, ref_c = lite["reference"]["overall"], cl["fidelity"]["reference"]["overall"]
    mm = json.loads((model / "medsynth.json").read_text())
    overlap = test_overlap(data, model) if independent else None
    return {"test_overlap": overlap, "model_train": {**train, "steps": mm["outputs"].get("steps"),
                            "train_time_s": mm["outputs"].get("train_time_s")},
            "images_per_set": n * len(m["real"]["classes"]),
            "evaluate_wall_s": eval_s, "lite0_fid_real_vs_real": ref_l["fid"],
            "clip_fid_real_vs_real": ref_c["fid"], "lite0_coverage_real_vs_real":
            ref_l["coverage"], "clip_coverage_real_vs_real": ref_c["coverage"],
            "real_alignment": _round(cl["alignment"]["real"]),
            "settings": [_round(r) for r in rows], "rank_agreement": agree}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/medsynth-bench-clip"))
    ap.add_argument("--demos", default="derm,cxr")
    ap.add_argument("--series", default="derm", help="demos to run the sampler series on "
                    "('' = none)")
    ap.add_argument("--n-per-class", type=int, default=200)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--clip-steps", type=int, default=1000)
    ap.add_argument("--series-n", type=int, default=60, help="images per class per setting")
    ap.add_argument("--series-steps", type=int, help="training steps of the series' diffusion "
                    "model (default: the make-demo recipe's 1500)")
    ap.add_argument("--series-model", type=Path, help="a trained diffusion model to copy in "
                    "as the series' model instead of training one (e.g. a make-demo model)")
    ap.add_argument("--series-store", type=Path, help="the description store --series-model was "
                    "trained with (copied; generate draws its texts)")
    ap.add_argument("--series-settings", help="sampler:steps,... of the series (default: "
                    + ",".join(f"{a}:{b}" for a, b in SERIES) + ")")
    ap.add_argument("--series-independent-model", action="store_true", help="pass "
                    "--independent-model to evaluate (a --series-model trained on another "
                    "dataset; say in the results how far its training images overlap the test)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv or [])
    res: dict[str, Any] = {"n_per_class": a.n_per_class, "size": a.size,
                           "clip_steps": a.clip_steps, "threads": a.threads,
                           "series_n_per_class": a.series_n, "series_steps": a.series_steps,
                           "series_model": str(a.series_model) if a.series_model else None,
                           "series_independent_model": a.series_independent_model,
                           "demos": {}}
    settings = SERIES
    if a.series_settings:
        settings = [(x.split(":")[0], int(x.split(":")[1])) for x in a.series_settings.split(",")]
    res["series_settings"] = [f"{x}:{n}" for x, n in settings]
    loads = [os.getloadavg()[0]]
    for demo in [d for d in a.demos.split(",") if d]:
        root = a.workdir / demo
        root.mkdir(parents=True, exist_ok=True)
        log = root / "log.txt"
        data, store = _data(root, demo, a.n_per_class, a.size, log)
        entry: dict[str, Any] = {"clip": _clip(root, data, store, a.clip_steps, a.threads, log)}
        loads.append(os.getloadavg()[0])
        entry["test"] = real_test_figures(root / "clip", data, store)
        print(demo, json.dumps(entry, indent=1), flush=True)
        if demo in a.series.split(","):
            model_store = None
            if a.series_model and not (root / "model" / "medsynth.json").exists():
                shutil.copytree(a.series_model, root / "model")
            if a.series_store:
                model_store = root / "model-store"
                if not model_store.exists():
                    shutil.copytree(a.series_store, model_store)
            entry["series"] = series(root, data, store, root / "clip", recipe=SERIES_RECIPE,
                                     n=a.series_n, threads=a.threads, settings=settings, log=log,
                                     steps=a.series_steps, model_store=model_store,
                                     independent=a.series_independent_model)
            loads.append(os.getloadavg()[0])
        res["demos"][demo] = entry
    res["load_average_1min"] = [round(v, 2) for v in loads]
    record("clip", res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
