"""Downstream benchmark: does adding synthetic images help a classifier on held-out real data?

For every real-data fraction and seed the same classifier is trained on

* ``real``          the real training images of that fraction,
* ``real+<SYNTH>``  the same real images plus every synthetic image of the set,
* ``<SYNTH>``       the synthetic images alone (once per seed; it uses no real training data),

with early stopping on the real val split (subsampled with the same fraction, so few-shot arms
do not see more real labels than they claim), and tested on the whole real test split, which
the generator never saw (see :func:`medsynth.evaluate.inputs.check_leakage`).

Each run appends one record to ``runs.jsonl`` and writes ``predictions/<run>.csv``; a resumed
evaluation skips finished runs. Metrics (torchmetrics): accuracy, balanced accuracy (macro
recall), macro-F1 and macro one-vs-rest AUROC, overall and per class; over seeds the mean with a
95 % t-interval, and the gain over ``real`` with a paired t-interval (same seed, same real
images).
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import JsonlAppender, atomic_path, atomic_write_bytes, read_jsonl
from medsynth.evaluate.config import EvaluateConfig, Fraction
from medsynth.evaluate.inputs import ImageSet

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
"""Overall metrics of every run (``balanced_accuracy`` is the headline)."""
PER_CLASS = ("recall", "precision", "f1", "auroc")
RUNS_FILE = "runs.jsonl"
REFERENCE_MODEL = "classifiers/real-full-seed0.pt"
"""Real-only classifier (all real train images, seed 0), reused for class fidelity."""


def subsample(train: ImageSet, frac: Fraction, seed: int, n_classes: int, *,
              minimum: int = 1) -> ImageSet:
    """Stratified, seeded subset of ``train``: a share or a fixed count of every class."""
    rng = np.random.default_rng(seed)
    y = train.y.numpy()
    keep: list[int] = []
    for k in range(n_classes):
        idx = np.nonzero(y == k)[0]
        if len(idx) == 0:
            continue
        idx = rng.permutation(idx)
        if frac.per_class is not None:
            n = min(frac.per_class, len(idx))
        else:
            n = max(minimum, int(round(float(frac.fraction or 1.0) * len(idx))))
        keep += idx[:min(n, len(idx))].tolist()
    return train.subset(sorted(keep), name=f"{train.name}@{frac.label}")


def concat(a: ImageSet, b: ImageSet, name: str) -> ImageSet:
    """Two image sets as one (real + synthetic)."""
    import torch

    return ImageSet(name, torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), a.ids + b.ids)


def classification_metrics(probs: Any, y: Any, n_classes: int) -> dict[str, Any]:
    """Overall and per-class metrics of class probabilities ``probs`` (N, K) against ``y``."""
    import torch
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_auroc,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    kw = {"num_classes": n_classes}
    present = torch.bincount(y, minlength=n_classes) > 0
    recall = multiclass_recall(probs, y, average="none", **kw)
    precision = multiclass_precision(probs, y, average="none", **kw)
    f1 = multiclass_f1_score(probs, y, average="none", **kw)
    auroc = multiclass_auroc(probs, y, average="none", **kw) if n_classes > 1 else torch.ones(1)
    nan = torch.tensor(float("nan"))
    # Classes absent from the test split have no recall/AUROC; average over present ones.
    recall = torch.where(present, recall, nan)
    auroc = torch.where(present, auroc, nan)
    return {
        "accuracy": float(multiclass_accuracy(probs, y, average="micro", **kw)),
        "balanced_accuracy": float(torch.nanmean(recall)),
        "macro_f1": float(f1[present].mean()),
        "auroc": float(torch.nanmean(auroc)),
        "per_class": {
            "recall": recall.tolist(), "precision": precision.tolist(), "f1": f1.tolist(),
            "auroc": auroc.tolist(),
        },
        "confusion": multiclass_confusion_matrix(probs, y, **kw).tolist(),
    }


def mean_ci(values: list[float], level: float = 0.95,
            bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean and ``level`` t-interval of ``values`` (the interval is None for one value).

    ``bounds`` clips the interval to the metric's range (a t-interval over 2-3 seeds can
    otherwise claim an accuracy above 1).
    """
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0, "values": list(values)}
    m = float(v.mean())
    if len(v) < 2:
        return {"mean": m, "lo": None, "hi": None, "n": 1, "values": v.tolist()}
    half = float(stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": m, "lo": lo, "hi": hi, "n": int(len(v)), "values": v.tolist()}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One benchmark configuration (a bar in the chart); runs once per seed."""

    setting: str
    """``real``, ``real+<synth>`` or ``<synth>``."""
    fraction: Fraction | None
    """Real training data used (None for synthetic-only)."""
    synthetic: str | None
    """Name of the synthetic set added (None for real-only)."""

    @property
    def fraction_label(self) -> str:
        return self.fraction.label if self.fraction else "none"

    def key(self, seed: int) -> str:
        safe = self.fraction_label.replace("/", "pc")
        return f"{self.setting}__{safe}__seed{seed}".replace("/", "_").replace(" ", "_")


def plan_arms(fractions: list[Fraction], synth_names: list[str]) -> list[Arm]:
    """real and real+synth arms per fraction, then one synthetic-only arm per set."""
    arms = []
    for f in fractions:
        arms.append(Arm("real", f, None))
        arms += [Arm(f"real+{s}", f, s) for s in synth_names]
    arms += [Arm(s, None, s) for s in synth_names]
    return arms


def _write_predictions(path: Path, ids: list[str], y: Any, probs: Any, classes: list[str]) -> None:
    import pandas as pd

    df = pd.DataFrame({"image_id": ids, "true": [classes[i] for i in y.tolist()],
                       "pred": [classes[i] for i in probs.argmax(1).tolist()]})
    for k, c in enumerate(classes):
        df[f"p_{c}"] = probs[:, k].numpy().round(5)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def run_benchmark(cfg: EvaluateConfig, out: Path, classes: list[str], train: ImageSet,
                  val: ImageSet, test: ImageSet, synth: dict[str, ImageSet], *, flips: bool,
                  device: str) -> dict[str, Any]:
    """Train and test every arm over every seed (resumable); return the aggregated results."""
    import torch

    from medsynth.evaluate.classifier import predict_proba, train_classifier
    from medsynth.ui import console, progress_bar

    n_classes = len(classes)
    arms = plan_arms(cfg.fractions, list(synth))
    done = {r["key"]: r for r in read_jsonl(out / RUNS_FILE)}
    todo = [(a, s) for a in arms for s in range(cfg.seeds) if a.key(s) not in done]
    if done and todo:
        console.print(f"benchmark: resuming, {len(done)} run(s) done, {len(todo)} to go")
    full = next((f for f in cfg.fractions if f.fraction == 1.0), None)
    with JsonlAppender(out / RUNS_FILE) as log, progress_bar() as bar:
        task = bar.add_task("benchmark runs", total=len(todo), rate="")
        for arm, seed in todo:
            key = arm.key(seed)
            bar.update(task, description=f"train {arm.setting} @ {arm.fraction_label} s{seed}")
            parts = []
            if arm.fraction is not None:
                real_part = subsample(train, arm.fraction, seed, n_classes)
                val_part = subsample(val, arm.fraction, seed, n_classes, minimum=2) \
                    if len(val) else val
                parts.append(real_part)
            else:
                real_part, val_part = None, val
            if arm.synthetic is not None:
                parts.append(synth[arm.synthetic])
            data = parts[0] if len(parts) == 1 else concat(parts[0], parts[1], arm.setting)
            if len(val_part) == 0:  # no val split: stop on the training loss instead
                val_part = data
            res = train_classifier(
                cfg.classifier, data.x, data.y, val_part.x, val_part.y, n_classes=n_classes,
                seed=seed, epochs=cfg.epochs, patience=cfg.patience, batch_size=cfg.batch_size,
                lr=cfg.lr, flips=flips, device=device)
            probs = predict_proba(res.model, test.x, device=device)
            m = classification_metrics(probs, test.y, n_classes)
            _write_predictions(out / "predictions" / f"{key}.csv", test.ids, test.y, probs,
                               classes)
            if arm.setting == "real" and arm.fraction == full and seed == 0:
                path = out / REFERENCE_MODEL
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    torch.save(res.model.state_dict(), tmp)
            rec = {"key": key, "setting": arm.setting, "fraction": arm.fraction_label,
                   "synthetic": arm.synthetic, "seed": seed,
                   "n_real": len(real_part) if real_part is not None else 0,
                   "n_synthetic": len(synth[arm.synthetic]) if arm.synthetic else 0,
                   "n_val": len(val_part), "epochs": res.epochs, "best_epoch": res.best_epoch,
                   "seconds": round(res.seconds, 2), **m}
            log.write(rec)
            done[key] = rec
            bar.advance(task)
    return aggregate(arms, done, cfg.seeds, classes)


def aggregate(arms: list[Arm], runs: dict[str, dict[str, Any]], seeds: int,
              classes: list[str]) -> dict[str, Any]:
    """Mean/CI per arm and metric, per class, the paired gain over real-only, a verdict."""
    out_arms = []
    for arm in arms:
        recs = [runs[arm.key(s)] for s in range(seeds) if arm.key(s) in runs]
        if not recs:
            continue
        entry: dict[str, Any] = {
            "setting": arm.setting, "fraction": arm.fraction_label, "synthetic": arm.synthetic,
            "n_runs": len(recs), "n_real": recs[0]["n_real"], "n_synthetic": recs[0]["n_synthetic"],
            "metrics": {m: mean_ci([r[m] for r in recs], bounds=(0, 1)) for m in METRICS},
            "per_class": {
                c: {m: mean_ci([r["per_class"][m][k] for r in recs], bounds=(0, 1))
                    for m in PER_CLASS}
                for k, c in enumerate(classes)
            },
            "confusion": np.sum([np.asarray(r["confusion"]) for r in recs], axis=0).tolist(),
            "epochs": mean_ci([r["epochs"] for r in recs])["mean"],
            "seconds": float(sum(r["seconds"] for r in recs)),
        }
        if arm.synthetic is not None and arm.fraction is not None:
            base = Arm("real", arm.fraction, None)
            pairs = [(runs[arm.key(s)], runs[base.key(s)]) for s in range(seeds)
                     if arm.key(s) in runs and base.key(s) in runs]
            entry["gain"] = {m: mean_ci([a[m] - b[m] for a, b in pairs], bounds=(-1, 1))
                             for m in METRICS}
            entry["verdict"] = verdict(entry["gain"]["balanced_accuracy"])
        out_arms.append(entry)
    return {"classes": classes, "seeds": seeds, "metrics": list(METRICS), "arms": out_arms}


def verdict(gain: dict[str, Any]) -> str:
    """``helps`` / ``hurts`` when the 95 % interval of the gain excludes 0, else ``no clear effect``."""
    if gain.get("mean") is None:
        return "not measured"
    if gain.get("lo") is None:
        return "helps (1 seed, no interval)" if gain["mean"] > 0 else "hurts (1 seed, no interval)"
    if gain["lo"] > 0:
        return "helps"
    if gain["hi"] < 0:
        return "hurts"
    return "no clear effect"
