"""Paired bootstrap over test images and seeds: intervals, verdicts and power.

Every benchmark run (arm, seed) leaves its class probabilities on the whole real test split.
One bootstrap replicate draws

* a resample of the test images, stratified by class (each class keeps its size, so no
  metric becomes undefined in a replicate), as multiplicity weights ``W[b, i]``, and
* a resample of the seeds (with replacement; their spread widened by ``sqrt(S / (S - 1))`` so
  that the seed part is not 20 % too small with 5 seeds, see :func:`resample_mean`),

and the SAME replicate is applied to every arm: an arm's metric in replicate ``b`` is the mean
over the resampled seeds of its runs' metrics on the resampled test images, and a gain is the
same mean of the per-seed differences (paired by seed, i.e. the same real images, and by test
image). The interval is the 2.5-97.5 % percentile range of the replicates. Both sources of
noise are counted: a huge test set with two seeds, or many seeds on a tiny test set, give wide
intervals.

Power: with ``se`` the replicates' standard deviation of a gain, the smallest gain the set-up
detects with 80 % power at a two-sided 5 % level is ``(z_0.975 + z_0.8) * se`` (about
2.8 se). Its two parts (test images; seeds) tell what to add when it is too large.

Metrics are computed from weights, so a replicate costs matrix products, not a re-run of
torchmetrics: accuracy, balanced accuracy (macro recall over the classes present in the test
split), macro-F1 and macro one-vs-rest AUROC (ties count one half), overall and per class.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
"""Overall metrics of every run (``balanced_accuracy`` is the headline)."""
PER_CLASS = ("recall", "precision", "f1", "auroc")
"""Per-class metrics of every run."""
LEVEL = 0.95
"""Interval level."""
POWER = 0.8
"""Power at which the smallest detectable gain is stated."""
ADVICE_ABOVE = 0.05
"""Advice (more test images, more seeds) is given when the detectable gain exceeds this."""
SEEDS_FOR_VERDICT = 2
"""A verdict needs at least this many seeds (one seed says nothing about training noise)."""


def mde_factor(level: float = LEVEL, power: float = POWER) -> float:
    """``z_(1+level)/2 + z_power``: detectable gain = this x the standard error (2.80)."""
    from scipy.stats import norm

    return float(norm.ppf((1 + level) / 2) + norm.ppf(power))


# ------------------------------------------------------------------------------ resampling
def stratified_weights(y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, N) multiplicities of a class-stratified resample with replacement of ``y``.

    float32: counts are exact, and half the memory traffic of float64 in the metric sums.
    """
    w = np.zeros((n_boot, len(y)), dtype=np.float32)
    for k in np.unique(y):
        idx = np.nonzero(y == k)[0]
        w[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=n_boot)
    return w


@dataclasses.dataclass
class Resamples:
    """One shared set of bootstrap replicates: test-image weights and seed draws."""

    weights: np.ndarray
    """(B, N) multiplicity of every test image in every replicate."""
    seeds: np.ndarray
    """(B, S) indices into the seed list drawn for every replicate."""

    @classmethod
    def draw(cls, y: np.ndarray, n_seeds: int, n_boot: int = 2000, seed: int = 0) -> Resamples:
        rng = np.random.default_rng(seed)
        w = stratified_weights(np.asarray(y), n_boot, rng)
        s = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        return cls(weights=w, seeds=s)


# ------------------------------------------------------------------------- weighted metrics
def _auroc_ovr(probs: np.ndarray, y: np.ndarray, wt: np.ndarray, k: int) -> np.ndarray:
    """One-vs-rest AUROC of class ``k`` for every weight column of ``wt`` (N, B).

    Weighted Mann-Whitney statistic: each positive scores the weight of the negatives below it,
    plus half of the tied ones. Images sorted by score once; rows (images) are contiguous, so
    the sums along them are fast.
    """
    s = probs[:, k]
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    pos = (y[order] == k)
    ws = wt[order]                                           # (N, B)
    wn = np.where(pos[:, None], 0.0, ws)
    wp = ws - wn
    if np.all(np.diff(s_sorted) > 0):                        # no tied scores
        below = np.cumsum(wn, axis=0) - wn
        num = (wp * below).sum(0)
    else:
        starts = np.concatenate([[0], np.nonzero(np.diff(s_sorted))[0] + 1])
        gp = np.add.reduceat(wp, starts, axis=0)             # positive weight per score group
        gn = np.add.reduceat(wn, starts, axis=0)             # negative weight per score group
        below = np.cumsum(gn, axis=0) - gn                   # negatives strictly below
        num = (gp * (below + 0.5 * gn)).sum(0)
    den = wp.sum(0) * wn.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def weighted_metrics(probs: np.ndarray, y: np.ndarray, n_classes: int,
                     w: np.ndarray | None = None) -> dict[str, Any]:
    """Every metric of ``probs`` (N, K) against ``y`` for each row of weights ``w`` (B, N).

    Returns ``{metric: (B,)}`` and ``{"per_class": {metric: (B, K)}}``; ``w=None`` is the plain
    test set (B = 1). Classes absent from ``y`` are left out of the macro averages (their
    per-class values are NaN).
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    w = np.ones((1, len(y)), dtype=np.float32) if w is None else np.atleast_2d(w)
    eye = np.eye(n_classes, dtype=w.dtype)
    true_1h = eye[y]                                   # (N, K)
    pred_1h = eye[probs.argmax(1)]
    correct = (probs.argmax(1) == y).astype(w.dtype)
    n_k = w @ true_1h                                   # (B, K) images per class
    tp = w @ (true_1h * correct[:, None])
    npred = w @ pred_1h
    present = (true_1h.sum(0) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n_k > 0, tp / np.where(n_k > 0, n_k, 1), np.nan)
        precision = np.where(npred > 0, tp / np.where(npred > 0, npred, 1), 0.0)
        f1 = np.where(npred + n_k > 0, 2 * tp / np.where(npred + n_k > 0, npred + n_k, 1), 0.0)
    wt = np.ascontiguousarray(w.T)
    auroc = np.stack([_auroc_ovr(probs, y, wt, k) if present[k] else
                      np.full(w.shape[0], np.nan) for k in range(n_classes)], axis=1)
    recall[:, ~present] = np.nan
    return {
        "accuracy": (w @ correct) / w.sum(1),
        "balanced_accuracy": np.nanmean(recall[:, present], axis=1),
        "macro_f1": f1[:, present].mean(1),
        "auroc": np.nanmean(auroc[:, present], axis=1) if n_classes > 1 else np.ones(w.shape[0]),
        "per_class": {"recall": recall, "precision": precision, "f1": f1, "auroc": auroc},
    }


# ------------------------------------------------------------------------------ summaries
def seed_ci(values: list[float] | np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """The seed spread alone: mean, standard deviation and t-interval over seeds."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) < 2:
        return {"mean": float(v.mean()) if len(v) else None, "sd": None, "lo": None, "hi": None,
                "n": int(len(v))}
    m, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, len(v) - 1) * sd / math.sqrt(len(v)))
    return {"mean": m, "sd": sd, "lo": m - half, "hi": m + half, "n": int(len(v))}


def interval(point: float, reps: np.ndarray, per_seed: np.ndarray, level: float = LEVEL,
             bounds: tuple[float, float] = (-1.0, 1.0)) -> dict[str, Any]:
    """Point value, bootstrap percentile interval and standard error, plus the seed spread.

    ``bounds``: the metric's range (the widened seed resample can step just outside it).
    """
    reps = reps[~np.isnan(reps)]
    a = (1 - level) / 2
    lo, hi = (np.clip(np.quantile(reps, [a, 1 - a]), *bounds).tolist() if len(reps)
              else (None, None))
    return {"mean": float(point), "lo": lo, "hi": hi,
            "se": float(reps.std(ddof=1)) if len(reps) > 1 else None,
            "n_seeds": int(len(per_seed)), "values": [float(v) for v in per_seed],
            "seeds": seed_ci(per_seed)}


def resample_mean(per_seed_reps: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(S, B) values of each seed in each replicate -> (B,) means over the drawn seeds.

    The seeds' deviations from their mean are first widened by ``sqrt(S / (S - 1))``: a plain
    bootstrap of S values has variance ``(S - 1) / S`` of the sample's ``s^2 / S`` (20 % too
    small with 5 seeds); widened, the seed part is the unbiased ``s^2 / S``.
    """
    n = per_seed_reps.shape[0]
    if n > 1:
        m = per_seed_reps.mean(0, keepdims=True)
        per_seed_reps = m + math.sqrt(n / (n - 1)) * (per_seed_reps - m)
    return np.take_along_axis(per_seed_reps, seeds.T, axis=0).mean(0)


def verdict(gain: dict[str, Any], *, min_seeds: int = SEEDS_FOR_VERDICT) -> str:
    """``helps`` / ``hurts`` only when the interval excludes 0 and there are enough seeds."""
    if gain.get("mean") is None or gain.get("lo") is None:
        return "not measured"
    if gain.get("n_seeds", 0) < min_seeds:
        return f"no verdict ({gain.get('n_seeds', 0)} seed; needs {min_seeds})"
    if gain["lo"] > 0:
        return "helps"
    if gain["hi"] < 0:
        return "hurts"
    return "no clear effect"


def mde_floor(class_sizes: list[int], level: float = LEVEL, pw: float = POWER) -> float:
    """Smallest detectable balanced-accuracy gain when every changed answer is a gain.

    A gain ``d`` in a class needs at least a share ``d`` of its images answered differently, so
    the paired difference has variance at least ``d (1 - d) / n_k`` there; with ``c = sum_k
    1 / n_k / K^2`` the detectable ``d`` solves ``d = f sqrt(c d (1 - d))``: ``f^2 c / (1 + f^2
    c)``. It keeps the statement honest when the two arms happen to agree on every test image
    (zero bootstrap spread, e.g. both perfect on a tiny test set).
    """
    f2c = mde_factor(level, pw) ** 2 * sum(1 / n for n in class_sizes) / len(class_sizes) ** 2
    return f2c / (1 + f2c)


def _floor_test_images(n_test: int, class_sizes: list[int], target: float) -> int:
    """Test images (same class shares) at which :func:`mde_floor` reaches ``target``."""
    c_now = sum(1 / n for n in class_sizes) / len(class_sizes) ** 2
    c_goal = target / (mde_factor() ** 2 * (1 - target))
    return int(math.ceil(n_test * c_now / c_goal))


def power(test_var: float, seed_var: float | None, n_test: int, n_seeds: int,
          target: float = ADVICE_ABOVE, class_sizes: list[int] | None = None) -> dict[str, Any]:
    """Smallest detectable gain (80 % power, 5 % level) and advice when it exceeds ``target``.

    ``test_var``: variance of the seed-mean gain over test resamples alone (seeds fixed);
    ``seed_var``: variance of that mean from the seeds alone (per-seed variance / n_seeds),
    None with one seed. The test part shrinks as 1/test images, the seed part as 1/seeds.
    ``class_sizes`` (test images per class) adds the floor of :func:`mde_floor`.
    """
    f = mde_factor()
    sv = seed_var or 0.0
    floor = mde_floor(class_sizes) if class_sizes else 0.0
    mde = max(f * math.sqrt(test_var + sv), floor)
    out: dict[str, Any] = {"mde": mde, "se": math.sqrt(test_var + sv),
                           "se_test": math.sqrt(test_var),
                           "se_seeds": math.sqrt(seed_var) if seed_var is not None else None,
                           "mde_floor": floor, "target": target, "advice": None}
    if seed_var is None:
        out["advice"] = (f"one seed: the training noise is not measured; run at least "
                         f"{SEEDS_FOR_VERDICT} seeds (5 recommended)")
        return out
    if mde <= target:
        return out
    goal = (target / f) ** 2
    need_test = n_test * test_var / (goal - sv) if goal > sv else math.inf
    need_seeds = n_seeds * sv / (goal - test_var) if goal > test_var else math.inf
    if class_sizes and floor > target:
        need_test = max(need_test, _floor_test_images(n_test, class_sizes, target))
        need_seeds = math.inf  # more seeds do not lift the floor
    out["needed_test_images"] = None if math.isinf(need_test) else int(math.ceil(need_test))
    out["needed_seeds"] = None if math.isinf(need_seeds) else int(math.ceil(need_seeds))
    ways = []
    if not math.isinf(need_test):
        ways.append(f"about {int(math.ceil(need_test))} test images (now {n_test})")
    if not math.isinf(need_seeds):
        ways.append(f"about {int(math.ceil(need_seeds))} seeds (now {n_seeds})")
    if ways:
        out["advice"] = f"to detect a {100 * target:.0f}-point gain use " + " or ".join(ways)
    else:  # neither alone suffices: scale both by the same factor
        m = (test_var + sv) / goal
        if class_sizes:
            m = max(m, _floor_test_images(n_test, class_sizes, target) / n_test)
        out["advice"] = (f"to detect a {100 * target:.0f}-point gain use about "
                         f"{int(math.ceil(n_test * m))} test images and "
                         f"{int(math.ceil(n_seeds * m))} seeds together (now {n_test} and "
                         f"{n_seeds})")
    return out


# ------------------------------------------------------------------------------ the analysis
class Bootstrap:
    """Metrics of every run on every replicate, then arm summaries, gains and ratios."""

    def __init__(self, y: np.ndarray, n_classes: int, n_seeds: int, n_boot: int = 2000,
                 seed: int = 0) -> None:
        self.y = np.asarray(y)
        self.n_classes = n_classes
        self.n_seeds = n_seeds
        self.res = Resamples.draw(self.y, n_seeds, n_boot, seed)
        self._seed_draws = {n_seeds: self.res.seeds}
        self._boot_seed = seed
        self._cache: dict[str, dict[str, Any]] = {}

    def run_metrics(self, key: str, probs: np.ndarray) -> dict[str, Any]:
        """``{"point": metrics on the test split, "reps": metrics on every replicate}``."""
        if key not in self._cache:
            self._cache[key] = {
                "point": weighted_metrics(probs, self.y, self.n_classes),
                "reps": weighted_metrics(probs, self.y, self.n_classes, self.res.weights)}
        return self._cache[key]

    def _stack(self, runs: list[dict[str, Any]], metric: str, k: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(S,) point values and (S, B) replicate values of one metric over the seeds."""
        def get(d: dict[str, Any]) -> np.ndarray:
            return d[metric] if k is None else d["per_class"][metric][:, k]
        return (np.array([get(r["point"])[0] for r in runs]),
                np.stack([get(r["reps"]) for r in runs]))

    def _seeds(self, n: int) -> np.ndarray:
        """Seed draws for ``n`` seeds: shared by every arm with that many finished runs."""
        if n not in self._seed_draws:
            rng = np.random.default_rng([self._boot_seed, n])
            self._seed_draws[n] = rng.integers(0, n, size=(self.res.weights.shape[0], n))
        return self._seed_draws[n]

    def arm(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Intervals of every metric (overall and per class) of one arm's runs (one per seed)."""
        seeds = self._seeds(len(runs))
        out: dict[str, Any] = {}
        for m in METRICS:
            pt, reps = self._stack(runs, m)
            out[m] = interval(float(pt.mean()), resample_mean(reps, seeds), pt, bounds=(0, 1))
        per_class: dict[int, Any] = {}
        for k in range(self.n_classes):
            per_class[k] = {}
            for m in PER_CLASS:
                pt, reps = self._stack(runs, m, k)
                per_class[k][m] = interval(float(np.nanmean(pt)) if not np.all(np.isnan(pt))
                                           else math.nan, resample_mean(reps, seeds), pt,
                                           bounds=(0, 1))
        out["per_class"] = per_class
        return out

    def diff_reps(self, a: list[dict[str, Any]], b: list[dict[str, Any]], metric: str
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Per-seed point differences (S,) and replicate means (B,) of ``a - b``, paired."""
        pa, ra = self._stack(a, metric)
        pb, rb = self._stack(b, metric)
        d_reps = ra - rb
        return pa - pb, resample_mean(d_reps, self._seeds(len(a)))

    def gain(self, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
        """Paired gain ``a - b`` (same seeds, same test resample) of every metric."""
        out = {}
        for m in METRICS:
            d, reps = self.diff_reps(a, b, m)
            out[m] = interval(float(d.mean()), reps, d)
        return out

    def power(self, a: list[dict[str, Any]], b: list[dict[str, Any]],
              metric: str = "balanced_accuracy") -> dict[str, Any]:
        """Smallest detectable gain of ``a - b`` with its test and seed parts (see :func:`power`)."""
        pa, ra = self._stack(a, metric)
        pb, rb = self._stack(b, metric)
        d = pa - pb
        test_var = float((ra - rb).mean(0).var(ddof=1))  # seeds fixed, test images resampled
        seed_var = float(d.var(ddof=1) / len(d)) if len(d) > 1 else None
        sizes = [int(n) for n in np.bincount(self.y, minlength=self.n_classes) if n]
        return power(test_var, seed_var, len(self.y), len(d), class_sizes=sizes)

    def ratio(self, num: tuple[list[Any], list[Any]], den: tuple[list[Any], list[Any]],
              metric: str = "balanced_accuracy") -> dict[str, Any]:
        """``gain(num) / gain(den)`` with its interval (e.g. the share of the oracle gain)."""
        dn, rn = self.diff_reps(*num, metric)
        dd, rd = self.diff_reps(*den, metric)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = np.where(rd != 0, rn / np.where(rd != 0, rd, 1), np.nan)
        point = float(dn.mean() / dd.mean()) if dd.mean() != 0 else math.nan
        a = (1 - LEVEL) / 2
        ok = reps[~np.isnan(reps)]
        lo, hi = np.quantile(ok, [a, 1 - a]).tolist() if len(ok) else (None, None)
        return {"mean": point, "lo": lo, "hi": hi}
