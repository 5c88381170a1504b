"""``medsynth judge validate DATA``: is a judge valid on this user's real images?

Held-out real images of DATA (its ``test`` split by default; never used for fitting) are each
scored against their own class and against every other class. A judge that knows the classes
scores an image higher for its own class: the AUROC of own-class scores vs other-class scores
(pooled over classes; per class: that class's score of its images vs of the others), the top-1
accuracy of "the class that scores highest" (ties split) and the share of the real images the
judge calls valid (a judge made for other images calls many real ones invalid). The pooled
AUROC has a 95 % bootstrap interval (images resampled within their class).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import BadUsageError, MedsynthError

N_BOOT = 200


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if not len(pos) or not len(neg):
        return float("nan")
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def pooled_auroc(scores: np.ndarray, own: np.ndarray) -> float:
    """Own-class vs other-class AUROC of a (images, classes) score matrix."""
    mask = np.zeros_like(scores, dtype=bool)
    mask[np.arange(len(own)), own] = True
    return _auroc(scores[mask], scores[~mask])


def summarize(scores: np.ndarray, own: np.ndarray, classes: list[str], valid: np.ndarray,
              seed: int = 0) -> dict[str, Any]:
    """The validation numbers of a score matrix (rows: images, columns: ``classes``)."""
    n, k = scores.shape
    per_class = {c: round(_auroc(scores[own == j, j], scores[own != j, j]), 4)
                 for j, c in enumerate(classes)}
    best = scores.max(axis=1, keepdims=True)
    tied = np.isclose(scores, best)
    top1 = float(np.mean(tied[np.arange(n), own] / tied.sum(axis=1)))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(own == j) for j in range(k)]
    boot = []
    for _ in range(N_BOOT):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups if len(g)])
        boot.append(pooled_auroc(scores[idx], own[idx]))
    return {"n": int(n), "n_per_class": {c: int((own == j).sum()) for j, c in enumerate(classes)},
            "auroc": round(pooled_auroc(scores, own), 4),
            "auroc_ci95": [round(float(np.nanquantile(boot, q)), 4) for q in (0.025, 0.975)],
            "auroc_per_class": per_class, "top1": round(top1, 4),
            "chance_top1": round(1 / k, 4), "valid_share": round(float(np.mean(valid)), 4),
            "valid_share_per_class": {c: round(float(np.mean(valid[own == j])), 4)
                                      for j, c in enumerate(classes) if (own == j).any()}}


def validate_judge(data: str | Path, *, backend: str = "real-features",
                   criteria: str | None = None, split: str = "test", limit: int | None = None,
                   json_out: str | Path | None = None, extractor: Any = None
                   ) -> dict[str, Any]:
    """Score DATA's held-out ``split`` against every class with ``backend`` (see module)."""
    from medsynth.imaging.dataset import open_dataset
    from medsynth.ui import track

    if split == "train":
        raise BadUsageError("--split train: the judge is fitted on the train split; validate "
                            "on held-out images (test or val)")
    if backend not in ("real-features", "measure"):
        raise BadUsageError(f"--backend {backend!r}: validate checks real-features or measure")
    ds = open_dataset(data)
    held = ds.split(split)
    if held.empty:
        raise MedsynthError(f"{ds.root}: has no {split!r} split to validate on",
                            hint="choose --split val or test")
    if limit is not None:
        held = held.groupby("class", sort=False).head(limit)
    classes = [c for c in ds.classes if c in set(held["class"].astype(str))]
    if len(classes) < 2:
        raise MedsynthError(f"{ds.root}: the {split} split holds fewer than two classes: "
                            "nothing to tell apart")
    arrays = [ds.load(r).array for _, r in track(list(held.iterrows()), f"read {split}",
                                                 total=len(held))]
    own = np.array([classes.index(str(c)) for c in held["class"]])
    info: dict[str, Any] = {"dataset": str(ds.root.resolve()), "split": split,
                            "backend": backend, "classes": classes}
    if backend == "real-features":
        from medsynth.judging.realjudge import RealFeatureJudge, RealReference, real_criteria

        ref = RealReference.fit(ds.root, extractor=extractor, threshold_split=(
            None if split == "val" else "val"))
        judge = RealFeatureJudge(real_criteria(ref.classes), ref, extractor=extractor)
        valid, _, p = judge.scores(arrays)
        cols = [ref.classes.index(c) for c in classes]
        scores = np.where(valid[:, None], p[:, cols], 0.0)
        info.update({"fitted_on": f"train ({sum(ref.n_train.values())} images)",
                     "validity_reference": ref.reference,
                     "threshold": round(ref.threshold, 6), "model": judge.model})
    else:
        from medsynth.judging.criteria import load_criteria
        from medsynth.judging.judges import JudgeSettings, judge_arrays, make_judge

        if not criteria:
            raise BadUsageError("--backend measure needs --criteria FILE (or derm, cxr)")
        crit = load_criteria(criteria)
        missing = [c for c in classes if c not in crit.classes]
        if missing:
            raise MedsynthError(f"{crit.path}: no criteria for class(es) {missing} of {ds.root}")
        mm = ds.manifest.outputs.get("mm_per_px")
        scores = np.zeros((len(arrays), len(classes)))
        valid = np.zeros(len(arrays), dtype=bool)
        with make_judge(crit, JudgeSettings(backend="measure"), n_images=len(arrays)) as j:
            for k, c in enumerate(classes):
                recs = judge_arrays(j, arrays, [c] * len(arrays),
                                    mm_per_px=float(mm) if mm else None)
                scores[:, k] = [r.score if r is not None else 0.0 for r in recs]
                for i, r in enumerate(recs):
                    if own[i] == k:
                        valid[i] = bool(r is not None and r.ok and r.image_valid)
        info.update({"criteria": crit.full_version})
    rep = {**info, **summarize(scores, own, classes, valid)}
    if json_out is not None:
        from medsynth.artifacts import atomic_write_text

        atomic_write_text(Path(json_out), json.dumps(rep, indent=2) + "\n")
    return rep


def print_validation(rep: dict[str, Any]) -> None:
    """The validation report on the console."""
    from medsynth.ui import out

    out.print(f"{rep['backend']} judge on {rep['n']} held-out real image(s) of "
              f"{rep['dataset']} ({rep['split']} split)", markup=False)
    if "fitted_on" in rep:
        out.print(f"  fitted on {rep['fitted_on']}; validity threshold from "
                  f"{rep['validity_reference']}", markup=False)
    lo, hi = rep["auroc_ci95"]
    out.print(f"  AUROC own-class vs other-class {rep['auroc']:.3f} (95 % CI {lo:.3f}-{hi:.3f}; "
              f"0.5 = chance)", markup=False)
    out.print(f"  top-1 accuracy {rep['top1']:.3f} (chance {rep['chance_top1']:.3f}); real "
              f"images judged valid {100 * rep['valid_share']:.1f} %", markup=False)
    for c, a in rep["auroc_per_class"].items():
        v = rep["valid_share_per_class"].get(c)
        out.print(f"  {c}: AUROC {a:.3f}, n {rep['n_per_class'][c]}, valid "
                  f"{100 * (v or 0):.0f} %", markup=False)
