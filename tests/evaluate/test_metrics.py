"""Benchmark statistics, fidelity and privacy figures against independent references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.evaluate.benchmark import classification_metrics, subsample
from medsynth.evaluate.config import parse_fraction
from medsynth.evaluate.fidelity import fid, kid, knn_precision_recall, msssim_diversity
from medsynth.evaluate.inputs import load_real, load_synthetic, open_synthetic
from medsynth.evaluate.privacy import privacy_report
from medsynth.imaging.dataset import open_dataset


def test_classification_metrics_match_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = torch.as_tensor(rng.integers(0, 3, 60))
    logits = torch.as_tensor(rng.normal(size=(60, 3))) + 1.5 * torch.nn.functional.one_hot(y, 3)
    probs = torch.softmax(logits.float(), 1)
    m = classification_metrics(probs, y, 3)
    pred = probs.argmax(1).numpy()
    assert m["accuracy"] == pytest.approx(float((pred == y.numpy()).mean()), abs=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-6)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, probs.numpy(), multi_class="ovr"),
                                       abs=1e-4)
    assert np.asarray(m["confusion"]).sum() == 60


def test_subsample_fraction_and_per_class(shapes: dict[str, Path]) -> None:
    ds = open_dataset(shapes["data"])
    train = load_real(ds, "train", 16, ds.classes)
    per = torch.bincount(train.y)
    sub = subsample(train, parse_fraction("0.5"), 0, 3)
    assert torch.bincount(sub.y).tolist() == [int(round(n / 2)) for n in per.tolist()]
    sub3 = subsample(train, parse_fraction("3"), 1, 3)
    assert torch.bincount(sub3.y).tolist() == [3, 3, 3]
    assert subsample(train, parse_fraction("3"), 1, 3).ids == sub3.ids  # seeded
    assert subsample(train, parse_fraction("3"), 2, 3).ids != sub3.ids
    tiny = subsample(train, parse_fraction("0.01"), 0, 3)
    assert torch.bincount(tiny.y).tolist() == [1, 1, 1]  # at least one per class


def test_fid_matches_torchmetrics_and_kid() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance

    from medsynth.evaluate.fidelity import _Cached

    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 64, generator=g)
    b = torch.randn(30, 64, generator=g) * 1.3 + 0.4
    ref = FrechetInceptionDistance(feature=_Cached.module(64), normalize=True)
    ref.update(a.double(), real=True)
    ref.update(b.double(), real=False)
    assert fid(a, b) == pytest.approx(float(ref.compute()), rel=1e-6)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid(a[:1], b) is None
    same, _ = kid(a[:20], a[20:])
    far, _ = kid(a, b)
    assert far > same


def test_knn_precision_recall_and_msssim() -> None:
    g = torch.Generator().manual_seed(1)
    real = torch.randn(80, 8, generator=g)
    p, r = knn_precision_recall(real, torch.randn(80, 8, generator=g), k=3)
    assert p > 0.7 and r > 0.7
    p, r = knn_precision_recall(real, torch.randn(80, 8, generator=g) + 20, k=3)
    assert p == 0 and r == 0
    # Mode collapse: everything at one real point -> precise but no recall.
    p, r = knn_precision_recall(real, real[:1].repeat(10, 1) + 1e-3 * torch.randn(10, 8), k=3)
    assert p == 1.0 and r < 0.2
    # One real outlier with a huge ball makes a far-off cluster "precise"; density and
    # coverage see through it.
    from medsynth.evaluate.fidelity import knn_manifold_metrics

    outlier = torch.cat([real, torch.full((1, 8), 30.0)])
    fake = torch.full((20, 8), 30.0) + 0.01 * torch.randn(20, 8, generator=g)
    m = knn_manifold_metrics(outlier, fake, k=3)
    assert m["precision"] == 1.0 and m["coverage"] < 0.1 and m["density"] < 0.5
    same = knn_manifold_metrics(real, torch.randn(400, 8, generator=g), k=3)
    assert 0.6 < same["density"] < 1.5 and same["coverage"] > 0.8
    x = torch.rand(8, 3, 32, 32, generator=g)
    assert msssim_diversity(x[:1].repeat(4, 1, 1, 1), 8) == pytest.approx(1.0, abs=1e-4)
    assert msssim_diversity(x, 16) < 0.5
    assert msssim_diversity(torch.rand(4, 1, 16, 16), 4) is not None  # few scales on tiny images


def test_feature_extractor_offline_gray_and_rgb(shapes: dict[str, Path]) -> None:
    from medsynth.evaluate.features import FeatureExtractor

    fx = FeatureExtractor(size=64)
    ds = open_dataset(shapes["data"])
    test = load_real(ds, "test", 32, ds.classes)
    x = torch.cat([test.of_class(k).x[:2] for k in range(3)])  # 2 discs, 2 rings, 2 squares
    f = fx(x)
    assert tuple(f.shape) == (6, 1280) and torch.isfinite(f).all()
    gray = x.mean(1, keepdim=True)
    # One channel is made three only inside the extractor.
    assert torch.allclose(fx(gray), fx(gray.expand(-1, 3, -1, -1)))
    # ImageNet features (not random weights): each image is closer to its own slightly shifted
    # copy than to any image of another shape.
    fs = fx(torch.roll(x, 1, dims=-1))
    cos = torch.nn.functional.normalize(f, dim=1) @ torch.nn.functional.normalize(fs, dim=1).T
    for i in range(6):
        other = [j for j in range(6) if j // 2 != i // 2]
        assert cos[i, i] > cos[i, other].max()


def test_privacy_flags_copies_not_perturbed(shapes: dict[str, Path]) -> None:
    from medsynth.evaluate.features import FeatureExtractor

    ds = open_dataset(shapes["data"])
    train = load_real(ds, "train", 32, ds.classes)
    test = load_real(ds, "test", 32, ds.classes)
    sets = {n: load_synthetic(open_synthetic(shapes[n]), 32, ds.classes)
            for n in ("copies", "noise")}
    fx = FeatureExtractor(size=64)
    m, details = privacy_report(train, test, fx(train.x), fx(test.x), sets,
                                {n: fx(s.x) for n, s in sets.items()}, q=0.05, n_pairs=4,
                                classes=ds.classes)
    assert m["sets"]["copies"]["pixel"]["near_copy_share"] == 1.0
    assert m["sets"]["copies"]["feature"]["near_copy_share"] == 1.0
    assert m["sets"]["noise"]["pixel"]["near_copy_share"] == 0.0
    pair = m["sets"]["copies"]["closest_pairs"][0]
    assert pair["pixel_distance"] == pytest.approx(0.0, abs=1e-6)
    # samples.csv's description_source names the copied training image: the pair finds it.
    src = open_synthetic(shapes["copies"]).table.set_index("sample_id")["description_source"]
    assert src[pair["synthetic_id"]] == f"store:{pair['real_id']}" or \
        pair["feature_distance"] == pytest.approx(0.0, abs=1e-6)
    assert len(details["sets"]["noise"]["closest"]) == 4
