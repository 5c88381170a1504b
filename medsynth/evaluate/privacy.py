"""Privacy: does the generator copy its training images?

For every synthetic image, the distance to its nearest real *training* image, in two spaces:
feature space (cosine distance of EfficientNet-Lite0 features: same content) and pixel space
(RMSE in [0, 1] at the classifier size: same pixels). A synthetic image is a *near-copy* when it
is closer to a training image than all but ``q`` (default 1 %) of the real *test* images are to
their nearest training image: held-out real images are what "different patients" look like, so
their distances calibrate the threshold. A generator that does not copy shows a near-copy share
close to ``q``; a copying one shows much more.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _cosine_nn(a: Any, b: Any, chunk: int = 1024) -> tuple[Any, Any]:
    """Nearest neighbour of each row of ``a`` in ``b`` by cosine distance: (distance, index)."""
    import torch
    import torch.nn.functional as F

    bn = F.normalize(b.float(), dim=1)
    ds, ix = [], []
    for i in range(0, len(a), chunk):
        an = F.normalize(a[i:i + chunk].float(), dim=1)
        d = 1.0 - an @ bn.T
        v, j = d.min(dim=1)
        ds.append(v.clamp_min(0))
        ix.append(j)
    return (torch.cat(ds), torch.cat(ix)) if ds else (torch.zeros(0), torch.zeros(0).long())


def _pixel_nn(a: Any, b: Any, chunk: int = 256) -> tuple[Any, Any]:
    """Nearest neighbour of each image of ``a`` in ``b`` by pixel RMSE: (distance, index)."""
    import torch

    bf = b.reshape(len(b), -1).float()
    dim = bf.shape[1]
    ds, ix = [], []
    for i in range(0, len(a), chunk):
        af = a[i:i + chunk].reshape(-1, dim).float()
        d = torch.cdist(af, bf) / np.sqrt(dim)
        v, j = d.min(dim=1)
        ds.append(v)
        ix.append(j)
    return (torch.cat(ds), torch.cat(ix)) if ds else (torch.zeros(0), torch.zeros(0).long())


def _summary(d_synth: Any, d_ref: Any, q: float) -> dict[str, Any]:
    thr = float(np.quantile(d_ref.numpy(), q)) if len(d_ref) else None
    share = float((d_synth <= thr).float().mean()) if thr is not None and len(d_synth) else None
    return {
        "threshold": thr, "near_copy_share": share, "expected_share": q,
        "n_near_copies": int((d_synth <= thr).sum()) if thr is not None else None,
        "synth_median_nn": float(d_synth.median()) if len(d_synth) else None,
        "synth_min_nn": float(d_synth.min()) if len(d_synth) else None,
        "real_median_nn": float(d_ref.median()) if len(d_ref) else None,
        "real_min_nn": float(d_ref.min()) if len(d_ref) else None,
    }


def privacy_report(train: Any, test: Any, f_train: Any, f_test: Any, synth: dict[str, Any],
                   f_synth: dict[str, Any], *, q: float, n_pairs: int,
                   classes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Nearest-neighbour privacy figures per synthetic set.

    Returns ``(metrics, details)``: metrics go to metrics.json; details hold the per-image
    distances and the closest pairs' indices (for the report's histogram and image pairs).
    """
    ref_f, _ = _cosine_nn(f_test, f_train)
    ref_p, _ = _pixel_nn(test.x, train.x)
    metrics: dict[str, Any] = {"method": "nearest real training image; threshold = quantile "
                               f"{q} of real test -> real train distances", "sets": {}}
    details: dict[str, Any] = {"reference": {"feature": ref_f, "pixel": ref_p}, "sets": {}}
    for name, s in synth.items():
        dfeat, ifeat = _cosine_nn(f_synth[name], f_train)
        dpix, ipix = _pixel_nn(s.x, train.x)
        order = np.argsort(dfeat.numpy(), kind="stable")[:n_pairs]
        closest = [{
            "synthetic_id": s.ids[i], "synthetic_class": classes[int(s.y[i])],
            "real_id": train.ids[int(ifeat[i])], "real_class": classes[int(train.y[ifeat[i]])],
            "feature_distance": float(dfeat[i]),
            "pixel_distance": float(
                ((s.x[i] - train.x[ifeat[i]]) ** 2).mean().sqrt()),
            "synth_index": int(i), "real_index": int(ifeat[i]),
        } for i in order]
        metrics["sets"][name] = {
            "feature": _summary(dfeat, ref_f, q), "pixel": _summary(dpix, ref_p, q),
            "closest_pairs": [{k: v for k, v in c.items() if not k.endswith("_index")}
                              for c in closest],
        }
        details["sets"][name] = {"feature": dfeat, "pixel": dpix, "closest": closest,
                                 "pixel_nn": ipix}
    return metrics, details
