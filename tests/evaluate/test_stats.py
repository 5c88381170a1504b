"""The paired bootstrap against cases whose answer is known exactly, verdicts and power."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsynth.evaluate.benchmark import Arm, aggregate, classification_metrics
from medsynth.evaluate.config import parse_fraction
from medsynth.evaluate.stats import (
    Bootstrap,
    mde_factor,
    power,
    stratified_weights,
    verdict,
    weighted_metrics,
)


def _probs(pred: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class probabilities whose argmax is ``pred`` (random confidences)."""
    p = rng.uniform(0, 0.5, (len(pred), n_classes))
    p[np.arange(len(pred)), pred] = 1.0
    return p / p.sum(1, keepdims=True)


def _hits(y: np.ndarray, correct: np.ndarray, n_classes: int, rng: np.random.Generator
          ) -> np.ndarray:
    """Probabilities that are right exactly where ``correct`` says so."""
    wrong = (y + 1 + rng.integers(0, n_classes - 1, len(y))) % n_classes
    return _probs(np.where(correct, y, wrong), n_classes, rng)


def test_weighted_metrics_match_sklearn_and_torchmetrics() -> None:
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        precision_score,
        roc_auc_score,
    )

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    logits = rng.normal(size=(90, 3)) + 1.2 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs = np.round(probs, 1)  # many tied scores: AUROC must count ties as one half
    probs[probs.sum(1) == 0] = 1 / 3
    w = rng.integers(0, 4, (5, 90)).astype(float)
    w[:, y == 2] += 1  # every class present in every row
    m = weighted_metrics(probs, y, 3, w)
    pred = probs.argmax(1)
    for b in range(5):
        sw = w[b]
        assert m["accuracy"][b] == pytest.approx(accuracy_score(y, pred, sample_weight=sw))
        assert m["balanced_accuracy"][b] == pytest.approx(
            balanced_accuracy_score(y, pred, sample_weight=sw))
        assert m["macro_f1"][b] == pytest.approx(
            f1_score(y, pred, average="macro", sample_weight=sw, zero_division=0))
        assert m["per_class"]["precision"][b] == pytest.approx(
            precision_score(y, pred, average=None, sample_weight=sw, zero_division=0))
        for k in range(3):
            assert m["per_class"]["auroc"][b, k] == pytest.approx(
                roc_auc_score(y == k, probs[:, k], sample_weight=sw))
    # Unit weights give the run's own metrics (torchmetrics, as recorded in runs.jsonl).
    one = weighted_metrics(probs, y, 3)
    ref = classification_metrics(torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(y),
                                 3)
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
        assert one[k][0] == pytest.approx(ref[k], abs=1e-5)


def test_stratified_weights_keep_class_sizes() -> None:
    y = np.array([0] * 7 + [1] * 3 + [2] * 11)
    w = stratified_weights(y, 500, np.random.default_rng(0))
    for k, n in ((0, 7), (1, 3), (2, 11)):
        assert np.all(w[:, y == k].sum(1) == n)
    assert w[:, y == 1].std() > 0.5  # images are really resampled


def _binomial_mean_quantiles(ns: list[int], ps: list[float], q: list[float]) -> list[float]:
    """Exact quantiles of the mean over classes of Binomial(n_k, p_k) / n_k."""
    from scipy.stats import binom

    # Distribution on a common grid: sum of k_j / n_j / K, built by convolution on exact values.
    support = {0.0: 1.0}
    for n, p in zip(ns, ps, strict=True):
        pmf = binom.pmf(np.arange(n + 1), n, p)
        nxt: dict[float, float] = {}
        for v, pv in support.items():
            for k in range(n + 1):
                if pmf[k] > 1e-12:
                    key = round(v + k / n / len(ns), 12)
                    nxt[key] = nxt.get(key, 0.0) + pv * pmf[k]
        support = nxt
    xs = np.array(sorted(support))
    cdf = np.cumsum([support[x] for x in xs])
    return [float(xs[np.searchsorted(cdf, qq)]) for qq in q]


def test_bootstrap_of_balanced_accuracy_matches_the_exact_binomial_law() -> None:
    """One seed: a stratified resample makes class k's recall exactly Binomial(n_k, p_k)/n_k."""
    rng = np.random.default_rng(1)
    ns, ps = [200, 300], [0.7, 0.6]
    y = np.repeat([0, 1], ns)
    correct = np.concatenate([rng.permutation(np.arange(n) < p * n) for n, p in zip(ns, ps,
                                                                                    strict=True)])
    boot = Bootstrap(y, 2, n_seeds=1, n_boot=6000, seed=0)
    arm = boot.arm([boot.run_metrics("a", _hits(y, correct, 2, rng))])
    ba = arm["balanced_accuracy"]
    assert ba["mean"] == pytest.approx(0.65)
    exact_sd = math.sqrt(sum(p * (1 - p) / n for n, p in zip(ns, ps, strict=True))) / 2
    assert ba["se"] == pytest.approx(exact_sd, rel=0.05)
    lo, hi = _binomial_mean_quantiles(ns, ps, [0.025, 0.975])
    assert ba["lo"] == pytest.approx(lo, abs=0.004)
    assert ba["hi"] == pytest.approx(hi, abs=0.004)
    # Per-class recall: its own binomial.
    rec1 = arm["per_class"][1]["recall"]
    assert rec1["se"] == pytest.approx(math.sqrt(0.6 * 0.4 / 300), rel=0.05)


def test_paired_gain_counts_only_discordant_images() -> None:
    """Gain of two arms on the same images: variance = sum_k Var(D_k) / n_k / K^2, exactly."""
    rng = np.random.default_rng(2)
    n = 400
    y = np.repeat([0, 1], n // 2)
    base = rng.random(n) < 0.7
    better = base.copy()
    flip = rng.permutation(np.nonzero(~base)[0])[:40]  # 40 more right answers
    better[flip] = True
    worse = rng.permutation(np.nonzero(base)[0])[:10]
    better[worse] = False  # and 10 fewer
    boot = Bootstrap(y, 2, n_seeds=1, n_boot=6000, seed=3)
    a = [boot.run_metrics("a", _hits(y, better, 2, rng))]
    b = [boot.run_metrics("b", _hits(y, base, 2, rng))]
    g = boot.gain(a, b)["balanced_accuracy"]
    d = better.astype(float) - base.astype(float)
    exact_mean = np.mean([d[y == k].mean() for k in (0, 1)])
    exact_sd = math.sqrt(sum(d[y == k].var() / (y == k).sum() for k in (0, 1))) / 2
    assert g["mean"] == pytest.approx(exact_mean)
    assert g["se"] == pytest.approx(exact_sd, rel=0.05)
    # Unpaired, each arm's own test noise would add up: far wider than the paired interval.
    sd_a = boot.arm(a)["balanced_accuracy"]["se"]
    sd_b = boot.arm(b)["balanced_accuracy"]["se"]
    assert g["se"] < 0.6 * math.hypot(sd_a, sd_b)


def test_seed_resampling_matches_the_exact_variance_of_a_mean() -> None:
    """Test noise zero by construction (each class all right or all wrong): seeds alone count."""
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 50)
    values = []
    runs = []
    boot = Bootstrap(y, 2, n_seeds=5, n_boot=8000, seed=5)
    for s, right in enumerate([True, False, True, False, False]):
        correct = (y == 0) | right
        values.append(0.5 * (1 + right))
        runs.append(boot.run_metrics(f"s{s}", _hits(y, correct, 2, rng)))
    ba = boot.arm(runs)["balanced_accuracy"]
    v = np.array(values)
    assert ba["mean"] == pytest.approx(v.mean())
    # The unbiased variance of a mean of 5 values (the plain bootstrap's would be 20 % lower).
    assert ba["se"] == pytest.approx(math.sqrt(v.var(ddof=1) / len(v)), rel=0.05)
    # The seed spread is kept as its own figure (t-interval over seeds).
    assert ba["seeds"]["sd"] == pytest.approx(v.std(ddof=1))
    assert ba["seeds"]["n"] == 5


def _runs(kind_probs: dict[str, list[np.ndarray]], y: np.ndarray, arms: list[Arm]
          ) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    runs, probs = {}, {}
    for arm in arms:
        for s, p in enumerate(kind_probs[arm.setting]):
            m = classification_metrics(torch.as_tensor(p, dtype=torch.float32),
                                       torch.as_tensor(y), 2)
            runs[arm.key(s)] = {**m, "key": arm.key(s), "n_real": 10, "n_synthetic": 5,
                                "n_added": 5, "epochs": 3, "best_epoch": 2,
                                "stopped_early": True, "seconds": 1.0}
            probs[arm.key(s)] = p
    return runs, probs


def test_verdicts_zero_gain_one_seed_and_real_effects() -> None:
    rng = np.random.default_rng(6)
    y = np.repeat([0, 1], 150)
    f = parse_fraction("1.0")
    real, synth = Arm("real", f, None, "real"), Arm("real+s", f, "s", "synthetic")

    def arm_probs(acc: float, seeds: int) -> list[np.ndarray]:
        return [_hits(y, rng.random(len(y)) < acc, 2, rng) for _ in range(seeds)]

    # Identical predictions: the gain is exactly 0 -> "no clear effect", never "hurts".
    same = arm_probs(0.7, 3)
    runs, probs = _runs({"real": same, "real+s": same}, y, [real, synth])
    a = aggregate([real, synth], runs, 3, ["a", "b"], probs=probs, y=y, n_boot=500)["arms"][1]
    assert a["gain"]["balanced_accuracy"]["mean"] == 0.0
    assert a["verdict"] == "no clear effect"
    # One seed: a large gain still gets no verdict (the training noise is unmeasured).
    runs, probs = _runs({"real": arm_probs(0.55, 1), "real+s": arm_probs(0.95, 1)}, y,
                        [real, synth])
    a = aggregate([real, synth], runs, 1, ["a", "b"], probs=probs, y=y, n_boot=500)["arms"][1]
    assert a["gain"]["balanced_accuracy"]["mean"] > 0.3
    assert a["verdict"].startswith("no verdict")
    assert "seed" in a["power"]["advice"]
    # Three seeds and a 25-point gain: helps; the reverse: hurts.
    lo_, hi_ = arm_probs(0.6, 3), arm_probs(0.85, 3)
    for arms_probs, expected in (({"real": lo_, "real+s": hi_}, "helps"),
                                 ({"real": hi_, "real+s": lo_}, "hurts")):
        runs, probs = _runs(arms_probs, y, [real, synth])
        a = aggregate([real, synth], runs, 3, ["a", "b"], probs=probs, y=y,
                      n_boot=500)["arms"][1]
        assert a["verdict"] == expected
        assert 0 < a["power"]["mde"] < 0.25


def test_verdict_and_power_rules() -> None:
    assert verdict({"mean": 0.05, "lo": 0.01, "hi": 0.09, "n_seeds": 2}) == "helps"
    assert verdict({"mean": -0.05, "lo": -0.09, "hi": -0.01, "n_seeds": 5}) == "hurts"
    assert verdict({"mean": 0.0, "lo": 0.0, "hi": 0.0, "n_seeds": 5}) == "no clear effect"
    assert verdict({"mean": 0.3, "lo": 0.2, "hi": 0.4, "n_seeds": 1}).startswith("no verdict")
    f = mde_factor()
    assert f == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    # Test noise only, detectable gain 10 points: 4x the test images brings it to 5 points.
    se = 0.1 / f
    p = power(se**2, 0.0, n_test=300, n_seeds=5, class_sizes=[150, 150])
    assert p["mde"] == pytest.approx(0.1)
    assert p["needed_test_images"] == 1200
    assert p["needed_seeds"] is None and "1200 test images" in p["advice"]
    # Seed noise only: seeds help, test images do not.
    p = power(0.0, se**2, n_test=300, n_seeds=5)
    assert p["needed_seeds"] == 20 and p["needed_test_images"] is None
    # Small enough: no advice.
    assert power((0.04 / f) ** 2, 0.0, 300, 5)["advice"] is None
    # Two arms that agree on every image (zero spread) still cannot detect less than the floor
    # of a test set this size; 300 images per class bring it below 1 point.
    from medsynth.evaluate.stats import mde_floor

    tiny = power(0.0, 0.0, n_test=24, n_seeds=5, class_sizes=[8, 8, 8])
    assert tiny["mde"] == pytest.approx(mde_floor([8, 8, 8])) and tiny["mde"] > 0.2
    assert tiny["needed_test_images"] > 24 and tiny["needed_seeds"] is None
    assert mde_floor([300, 300, 300]) < 0.01
    # The floor's own law: d = f sqrt(c d (1 - d)).
    d, c = mde_floor([50, 70]), (1 / 50 + 1 / 70) / 4
    assert d == pytest.approx(f * math.sqrt(c * d * (1 - d)))
