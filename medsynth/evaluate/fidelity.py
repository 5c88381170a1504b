"""Fidelity and diversity of synthetic images, each beside a real-vs-real reference.

* FID (exact, see :func:`fid`) and KID (torchmetrics) between synthetic and real test features; the reference is real
  train vs real test, the value two samples of the *real* distribution reach at these sizes
  (FID is biased upward for small samples, so only the comparison is meaningful).
* k-NN precision/recall (Kynkaanniemi et al. 2019): precision = share of synthetic images inside
  the real k-NN manifold, recall = share of real images inside the synthetic manifold; and the
  outlier-robust density/coverage (Naeem et al. 2020) from the same balls.
* MS-SSIM diversity: mean MS-SSIM of random same-class image pairs (lower = more diverse).
* Class fidelity: accuracy of a classifier trained on real data on the synthetic images of each
  class (reference: its accuracy on the real test images of that class).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class _Cached:
    """Build a pass-through ``nn.Module`` for torchmetrics: the features are computed already.

    Lets torchmetrics' FID/KID (``feature=`` accepts an nn.Module) do the statistics on features
    extracted once per image set, instead of running the network again for every pair.
    """

    @staticmethod
    def module(dim: int) -> Any:
        import torch

        class Passthrough(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.num_features = dim

            def forward(self, x: Any) -> Any:
                return x

        return Passthrough()


def fid(real: Any, fake: Any) -> float | None:
    """Frechet distance between two feature sets (N, D); None with fewer than 2 of either.

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)``, computed exactly without the
    D x D matrix square root: with centred features X1, X2 and ``S = X^T X / (n - 1)``, the
    non-zero eigenvalues of ``S1 S2`` are the squared singular values of ``X1 X2^T`` (n1 x n2),
    so ``tr sqrt(S1 S2)`` is that matrix's nuclear norm over ``sqrt((n1 - 1)(n2 - 1))``. Same
    value as torchmetrics' FrechetInceptionDistance (checked in the tests), but fast when there
    are fewer images than feature dimensions, as in per-class figures.
    """
    import torch

    if len(real) < 2 or len(fake) < 2:
        return None
    a, b = real.double(), fake.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    xa, xb = a - mu_a, b - mu_b
    na, nb = len(a) - 1, len(b) - 1
    tr_a = float((xa * xa).sum()) / na
    tr_b = float((xb * xb).sum()) / nb
    cross = float(torch.linalg.svdvals(xa @ xb.T).sum()) / (na * nb) ** 0.5
    return max(float(((mu_a - mu_b) ** 2).sum()) + tr_a + tr_b - 2.0 * cross, 0.0)


def kid(real: Any, fake: Any, subsets: int = 50, seed: int = 0) -> tuple[float | None, float | None]:
    """Kernel Inception Distance (mean, std over subsets) of two feature sets."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(len(real), len(fake), 1000)
    if n < 2:
        return None, None
    torch.manual_seed(seed)  # torchmetrics draws the subsets with torch's global generator
    with warnings.catch_warnings():  # "will save all extracted features": they are ours already
        warnings.simplefilter("ignore", UserWarning)
        m = KernelInceptionDistance(feature=_Cached.module(real.shape[1]), subsets=subsets,
                                    subset_size=n, normalize=True)
    m.update(real.double(), real=True)
    m.update(fake.double(), real=False)
    mean, std = m.compute()
    return float(mean), float(std)


def knn_precision_recall(real: Any, fake: Any, k: int = 3) -> tuple[float | None, float | None]:
    """Improved precision and recall (Kynkaanniemi et al.) with k-NN balls in feature space."""
    m = knn_manifold_metrics(real, fake, k)
    return m["precision"], m["recall"]


def knn_manifold_metrics(real: Any, fake: Any, k: int = 3) -> dict[str, float | None]:
    """Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020).

    Precision: share of fake samples inside any real k-NN ball; recall: share of real samples
    inside any fake ball. One real outlier with a huge ball can make garbage look precise, so
    density (how many real balls hold a fake sample, over k; about 1 for matching
    distributions) and coverage (share of real balls holding any fake sample) are given too.
    """
    import torch

    none: dict[str, float | None] = {"precision": None, "recall": None, "density": None, "coverage": None}
    if len(real) <= k or len(fake) <= k:
        return none

    def radii(f: Any) -> Any:
        d = torch.cdist(f, f)
        return d.kthvalue(k + 1, dim=1).values  # k+1: the point itself is at distance 0

    r_real, r_fake = radii(real), radii(fake)
    inside = torch.cdist(fake, real) <= r_real[None, :]  # (n_fake, n_real): fake j in ball i
    recall = (torch.cdist(real, fake) <= r_fake[None, :]).any(dim=1).float().mean()
    return {"precision": float(inside.any(dim=1).float().mean()), "recall": float(recall),
            "density": float(inside.float().sum() / (k * len(fake))),
            "coverage": float(inside.any(dim=0).float().mean())}


def msssim_diversity(x: Any, n_pairs: int = 64, seed: int = 0) -> float | None:
    """Mean MS-SSIM of random distinct pairs of ``x`` (N, C, H, W) in [0, 1]; None if N < 2.

    The number of scales adapts to small images (torchmetrics needs each scale larger than the
    kernel); the standard 5-scale weights are truncated and renormalised.
    """
    import torch
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    n = len(x)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n  # never the same image
    a, b = x[torch.as_tensor(i)].float(), x[torch.as_tensor(j)].float()
    for scales in (5, 4, 3, 2, 1):
        betas = MSSSIM_BETAS[:scales]
        betas = tuple(float(v / sum(betas)) for v in betas)
        for kernel, sigma in ((11, 1.5), (7, 1.0), (5, 0.75), (3, 0.5)):
            try:
                v = multiscale_structural_similarity_index_measure(
                    a, b, data_range=1.0, betas=betas, kernel_size=kernel, sigma=sigma)
            except (ValueError, RuntimeError):
                continue
            return float(v)
    return None


def fidelity_pair(real_feats: Any, fake_feats: Any, k: int) -> dict[str, Any]:
    """FID, KID, precision and recall of one (real, fake) pair of feature sets."""
    kid_mean, kid_std = kid(real_feats, fake_feats)
    return {"fid": fid(real_feats, fake_feats), "kid": kid_mean, "kid_std": kid_std,
            **knn_manifold_metrics(real_feats, fake_feats, k),
            "n_real": int(len(real_feats)), "n_fake": int(len(fake_feats))}


def class_accuracy(probs: Any, y: Any, n_classes: int) -> dict[str, Any]:
    """Accuracy overall and per class index (None for a class without images)."""
    pred = probs.argmax(1)
    per = {}
    for c in range(n_classes):
        m = y == c
        per[c] = float((pred[m] == c).float().mean()) if int(m.sum()) else None
    return {"overall": float((pred == y).float().mean()) if len(y) else None, "per_class": per}


def reference_indices(train_y: Any, synth: dict[str, Any], n_classes: int) -> np.ndarray:
    """Indices of the real training images of the real-vs-real reference.

    FID/KID/precision/recall depend on the sample sizes: the reference draws as many real
    training images per class as the largest synthetic set has (when there are that many).
    Seeded, so every feature space (EfficientNet-Lite0, the CLIP model) uses the same images.
    """
    rng = np.random.default_rng(0)
    keep: list[int] = []
    for c in range(n_classes):
        idx = np.nonzero(train_y.numpy() == c)[0]
        n_syn = max((int((s.y == c).sum()) for s in synth.values()), default=0) or len(idx)
        keep += sorted(rng.permutation(idx)[:min(len(idx), n_syn)].tolist())
    return np.asarray(sorted(keep), dtype=np.int64)


def fidelity_report(classes: list[str], test: Any, train: Any, f_test: Any, f_train: Any,
                    synth: dict[str, Any], f_synth: dict[str, Any], *, k: int, n_pairs: int,
                    ref_probs_test: Any | None, ref_probs_synth: dict[str, Any]) -> dict[str, Any]:
    """All fidelity figures: per synthetic set and class, plus the real-vs-real reference."""
    from medsynth.ui import track

    n_classes = len(classes)

    def by_class(feats: Any, y: Any, c: int) -> Any:
        return feats[y == c]

    keep_t = reference_indices(train.y, synth, n_classes)
    f_ref, y_ref = f_train[keep_t], train.y[keep_t]
    ref: dict[str, Any] = {"overall": fidelity_pair(f_test, f_ref, k), "per_class": {},
                           "msssim": {}, "class_fidelity": None}
    for c, name in enumerate(classes):
        ref["per_class"][name] = fidelity_pair(by_class(f_test, test.y, c),
                                               by_class(f_ref, y_ref, c), k)
        ref["msssim"][name] = msssim_diversity(test.x[test.y == c], n_pairs, seed=c)
    if ref_probs_test is not None:
        acc = class_accuracy(ref_probs_test, test.y, n_classes)
        ref["class_fidelity"] = {"overall": acc["overall"],
                                 **{classes[c]: v for c, v in acc["per_class"].items()}}
    sets: dict[str, Any] = {}
    for sname in track(list(synth), "fidelity", unit="set"):
        s, fs = synth[sname], f_synth[sname]
        present = sorted(set(s.y.tolist()))
        entry: dict[str, Any] = {
            # Overall against the real test images of the classes this set has.
            "overall": fidelity_pair(f_test[np.isin(test.y.numpy(), present)], fs, k),
            "per_class": {}, "msssim": {}, "class_fidelity": None,
        }
        for c in present:
            entry["per_class"][classes[c]] = fidelity_pair(by_class(f_test, test.y, c),
                                                           by_class(fs, s.y, c), k)
            entry["msssim"][classes[c]] = msssim_diversity(s.x[s.y == c], n_pairs, seed=c)
        if sname in ref_probs_synth:
            acc = class_accuracy(ref_probs_synth[sname], s.y, n_classes)
            entry["class_fidelity"] = {"overall": acc["overall"],
                                       **{classes[c]: acc["per_class"][c] for c in present}}
        sets[sname] = entry
    return {"reference": ref, "sets": sets}
