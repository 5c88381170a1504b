"""Is the offline judge valid? Held-out REAL demo images scored against their own class's
criteria and against every other class's.

    python -m benchmarks judge_validity            # writes benchmarks/results/judge_validity.json
    python -m benchmarks.judge_validity --derm-n 200 --cxr-n 100 --workdir DIR

Per demo (derm 64 px, cxr 128 px; seed 1, a seed the shipped criteria were not designed on):
the test split of a fresh demo dataset, every image judged by the ``measure`` judge (the real
code path: ``make_judge`` + ``judge_arrays``) against each class's checklist.

* AUROC own-vs-other (target >= 0.85): positives are each image's score against its own
  class's criteria, negatives its scores against the other classes' (pooled over classes);
  also per class (that class's checklist, its images vs the rest) and the top-1 accuracy of
  "the class whose checklist scores highest" (ties split).
* The same AUROC with the phantoms' ground-truth attributes in place of the measurements
  (the criteria's own ceiling: what a perfect measurer would reach).
* Per criterion: agreement of the judge's verdict with the verdict the rule gives on the
  ground-truth attributes (over the decided verdicts), Cohen's kappa, and the unsure share.
* A 95 % bootstrap interval of the pooled AUROC (images resampled within their class).
* Cost: images judged per second (wall clock of each pass over the test images; the CPU time
  of the measuring worker processes is not visible from here: see judge_cost for CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_AUROC = 0.85
DEMOS = {"derm": {"size": 64, "n_per_class": 200}, "cxr": {"size": 128, "n_per_class": 100}}
SEED = 1


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks of ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def kappa(a: list[bool], b: list[bool]) -> float | None:
    if not a:
        return None
    a_, b_ = np.asarray(a), np.asarray(b)
    po = float((a_ == b_).mean())
    pe = float(a_.mean() * b_.mean() + (1 - a_.mean()) * (1 - b_.mean()))
    return None if pe >= 1 else round((po - pe) / (1 - pe), 3)


def gt_values(demo: str, row: Any) -> dict[str, Any]:
    """A labels.csv row's ground-truth attributes in the measurer's form (lists for colours)."""
    out = {k: row[k] for k in row.index}
    if demo == "derm":
        out["colors"] = [c for c in str(row["colors"]).split(";") if c and c != "nan"]
        out["structures"] = [s for s in str(row["structures"]).split(";")
                             if s and s not in ("none", "nan")]
    return out


def score_matrix(records: dict[str, list[Any]], classes: list[str]) -> np.ndarray:
    return np.array([[records[c][i].score for c in classes]
                     for i in range(len(records[classes[0]]))])


def pooled_auroc(S: np.ndarray, y: np.ndarray) -> float:
    """Own-class scores vs other-class scores, pooled over the classes."""
    k = S.shape[1]
    pos = S[np.arange(len(y)), y]
    neg = np.concatenate([S[y == c][:, [j for j in range(k) if j != c]].ravel()
                          for c in range(k)])
    return auroc(pos, neg)


def bootstrap_interval(S: np.ndarray, y: np.ndarray, n: int = 1000, seed: int = 0
                       ) -> list[float]:
    """95 % percentile interval of the pooled AUROC, resampling images (within each class)."""
    rng = np.random.default_rng(seed)
    idx = [np.nonzero(y == c)[0] for c in range(S.shape[1])]
    vals = []
    for _ in range(n):
        pick = np.concatenate([rng.choice(i, len(i)) for i in idx if len(i)])
        vals.append(pooled_auroc(S[pick], y[pick]))
    return [round(float(v), 4) for v in np.percentile(vals, [2.5, 97.5])]


def summarize(S: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    top = S.max(1, keepdims=True)
    ties = np.isclose(S, top)
    top1 = float((ties[np.arange(len(y)), y] / ties.sum(1)).mean())
    return {
        "auroc_own_vs_other": round(pooled_auroc(S, y), 4),
        "auroc_interval_95": bootstrap_interval(S, y),
        "auroc_per_class": {c: round(auroc(S[y == j, j], S[y != j, j]), 4)
                            for j, c in enumerate(classes)},
        "top1_accuracy": round(top1, 4),
        "mean_score": {c: {"own_images": round(float(S[y == j, j].mean()), 3),
                           "other_images": round(float(S[y != j, j].mean()), 3)}
                       for j, c in enumerate(classes)},
    }


def run_demo(demo: str, root: Path, n_per_class: int, size: int, processes: int
             ) -> dict[str, Any]:
    from medsynth.data.demo.common import DemoConfig, write_demo
    from medsynth.imaging.dataset import open_dataset
    from medsynth.judging.criteria import load_criteria, rule_verdict, weighted_score
    from medsynth.judging.judges import JudgeSettings, judge_arrays, make_judge

    data = root / f"{demo}-{size}-s{SEED}"
    if not (data / "medsynth.json").is_file():
        write_demo(DemoConfig(demo=demo, out=str(data), n_per_class=n_per_class, size=size,
                              seed=SEED))
    ds = open_dataset(data)
    test = ds.split("test").reset_index(drop=True)
    crit = load_criteria(demo)
    classes = list(crit.classes)
    y = np.array([classes.index(c) for c in test["class"]])
    arrays = [ds.load(r).array for _, r in test.iterrows()]
    ids = test["image_id"].astype(str).tolist()
    mm = float(ds.manifest.outputs["mm_per_px"])
    records: dict[str, list[Any]] = {}
    timing: dict[str, Any] = {}
    with make_judge(crit, JudgeSettings(backend="measure", concurrency=processes),
                    n_images=len(arrays)) as judge:
        for c in classes:
            t0 = time.perf_counter()
            own_only = [i for i in range(len(ids)) if y[i] == classes.index(c)]
            recs = judge_arrays(judge, arrays, [c] * len(arrays), sample_ids=ids, mm_per_px=mm)
            dt = time.perf_counter() - t0
            assert all(r is not None for r in recs)
            records[c] = recs  # type: ignore[assignment]
            timing[c] = {"images": len(recs), "seconds": round(dt, 2),
                         "images_per_s": round(len(recs) / dt, 1),
                         "own_images": len(own_only)}
    S = score_matrix(records, classes)
    result = {"images": len(ids), "per_class_images": {c: int((y == j).sum())
                                                       for j, c in enumerate(classes)},
              "size": size, "mm_per_px": mm, "criteria": crit.full_version,
              "measured": summarize(S, y, classes)}
    # the same scores from the ground-truth attributes (the criteria's own ceiling)
    G = np.zeros_like(S)
    per_criterion: dict[str, Any] = {}
    gts = [gt_values(demo, r) for _, r in test.iterrows()]
    for j, c in enumerate(classes):
        cc = crit.for_class(c)
        checkable = [k.id for k in cc.criteria if k.measure is not None]
        for i, gt in enumerate(gts):
            vm = {k.id: rule_verdict(k.measure, gt.get(k.measure.attribute))[0]
                  for k in cc.criteria if k.measure is not None}
            G[i, j] = weighted_score(cc, vm, True, checkable)
        for k in cc.criteria:
            if k.measure is None:
                continue
            judged = [r.verdict_map()[k.id] for r in records[c]]
            truth = [rule_verdict(k.measure, gt.get(k.measure.attribute))[0] == "met"
                     for gt in gts]
            decided = [(v == "met", t) for v, t in zip(judged, truth, strict=True)
                       if v != "unsure"]
            per_criterion[f"{c}.{k.id}"] = {
                "rule": k.measure.describe(),
                "agreement": round(float(np.mean([a == b for a, b in decided])), 3)
                if decided else None,
                "kappa": kappa([a for a, _ in decided], [b for _, b in decided]),
                "unsure": round(1 - len(decided) / len(judged), 3),
                "met_rate_judge": round(float(np.mean([a for a, _ in decided])), 3)
                if decided else None,
                "met_rate_truth": round(float(np.mean(truth)), 3)}
    result["ground_truth_ceiling"] = summarize(G, y, classes)
    result["per_criterion"] = per_criterion
    agree = [v["agreement"] for v in per_criterion.values() if v["agreement"] is not None]
    result["mean_criterion_agreement"] = round(float(np.mean(agree)), 3)
    result["invalid_images"] = int(sum(not r.image_valid for rs in records.values() for r in rs)
                                   // len(classes))
    result["cost"] = {"per_pass": timing,
                      "images_per_s": round(float(np.mean([t["images_per_s"]
                                                           for t in timing.values()])), 1),
                      "processes": processes}
    result["target_auroc"] = TARGET_AUROC
    result["meets_target"] = result["measured"]["auroc_own_vs_other"] >= TARGET_AUROC
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.common import record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None, help="Keep the demo datasets here.")
    ap.add_argument("--derm-n", type=int, default=DEMOS["derm"]["n_per_class"],
                    help="Derm images per class (20%% are the test split).")
    ap.add_argument("--cxr-n", type=int, default=DEMOS["cxr"]["n_per_class"],
                    help="Cxr images per class (20%% are the test split).")
    ap.add_argument("--processes", type=int, default=2, help="Measure worker processes.")
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDSYNTH_NO_PROGRESS", "1")
    tmp = None
    root = args.workdir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="judge-validity-")
        root = Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    out = {"seed": SEED, "load_average_1min_start": round(load, 2)}
    for demo, n in (("derm", args.derm_n), ("cxr", args.cxr_n)):
        out[demo] = run_demo(demo, root, n, DEMOS[demo]["size"], args.processes)
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    record("judge_validity", out)
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    main()
