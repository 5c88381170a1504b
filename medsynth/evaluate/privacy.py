"""Privacy: does the generator copy its training images? (The method: medsynth.metrics.privacy.)

Private images = the real *training* split; the reference = the real *test* split's distances to
it. Per synthetic set: near-copy share and distances in feature and pixel space, and the
closest synthetic/real pairs for the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medsynth.metrics.privacy import near_copies, reference_distances


def privacy_report(train: Any, test: Any, f_train: Any, f_test: Any, synth: dict[str, Any],
                   f_synth: dict[str, Any], *, q: float, n_pairs: int,
                   classes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Nearest-neighbour privacy figures per synthetic set.

    Returns ``(metrics, details)``: metrics go to metrics.json; details hold the per-image
    distances and the closest pairs' indices (for the report's histogram and image pairs).
    """
    ref = reference_distances(train.x, test.x, f_train, f_test)
    metrics: dict[str, Any] = {"method": "nearest real training image; threshold = quantile "
                               f"{q} of real test -> real train distances", "sets": {}}
    details: dict[str, Any] = {"reference": ref, "sets": {}}
    for name, s in synth.items():
        nc = near_copies(train.x, f_train, s.x, f_synth[name], ref, q)
        dfeat, ifeat = nc["distances"]["feature"], nc["nearest"]["feature"]
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
            "feature": nc["feature"], "pixel": nc["pixel"],
            "closest_pairs": [{k: v for k, v in c.items() if not k.endswith("_index")}
                              for c in closest],
        }
        details["sets"][name] = {"feature": dfeat, "pixel": nc["distances"]["pixel"],
                                 "closest": closest, "pixel_nn": nc["nearest"]["pixel"]}
    return metrics, details
