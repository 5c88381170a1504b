"""Privacy: does the generator copy its training images? (The method: medsynth.metrics.privacy.)

Private images = the real *training* split; the reference = the real *test* split's distances to
it. Per synthetic set: near-copy share and distances in feature and pixel space, and the
closest synthetic/real pairs for the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from medsynth.metrics.privacy import near_copies, real_groups, reference_distances

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from medsynth.evaluate.inputs import ImageSet
    from medsynth.evaluate.sections import ClosestPair, PrivacySection


def privacy_report(train: ImageSet, test: ImageSet, f_train: torch.Tensor, f_test: torch.Tensor,
                   synth: Mapping[str, ImageSet], f_synth: Mapping[str, torch.Tensor], *,
                   q: float, n_pairs: int, classes: list[str], table: pd.DataFrame | None = None
                   ) -> tuple[PrivacySection, dict[str, Any]]:
    """Nearest-neighbour privacy figures per synthetic set.

    ``table``: the real dataset's labels (``image_id``; ``dup_group``/``split_group`` where
    import recorded them): test images' duplicates and group mates in train do not calibrate.
    Returns ``(metrics, details)``: metrics go to metrics.json; details hold the per-image
    distances and the closest pairs' indices (for the report's histogram and image pairs).
    """
    ref = reference_distances(train.x, test.x, f_train, f_test,
                              groups=real_groups(table, train.ids, test.ids))
    metrics: PrivacySection = {"method": "nearest real training image; threshold = quantile "
                               f"{q} of real test -> real train distances (exact duplicates "
                               "and shared groups excluded)", "reference": ref["excluded"],
                               "sets": {}}
    details: dict[str, Any] = {"reference": ref, "sets": {}}
    for name, s in synth.items():
        nc = near_copies(train.x, f_train, s.x, f_synth[name], ref, q)
        dfeat, ifeat = nc["distances"]["feature"], nc["nearest"]["feature"]
        order = np.argsort(dfeat.numpy(), kind="stable")[:n_pairs]
        closest: list[dict[str, Any]] = [{
            "synthetic_id": s.ids[i], "synthetic_class": classes[int(s.y[i])],
            "real_id": train.ids[int(ifeat[i])], "real_class": classes[int(train.y[ifeat[i]])],
            "feature_distance": float(dfeat[i]),
            "pixel_distance": float(
                ((s.x[i] - train.x[ifeat[i]]) ** 2).mean().sqrt()),
            "synth_index": int(i), "real_index": int(ifeat[i]),
        } for i in order]
        pairs: list[ClosestPair] = [{  # what metrics.json keeps: no indices
            "synthetic_id": c["synthetic_id"], "synthetic_class": c["synthetic_class"],
            "real_id": c["real_id"], "real_class": c["real_class"],
            "feature_distance": c["feature_distance"], "pixel_distance": c["pixel_distance"]}
            for c in closest]
        metrics["sets"][name] = {"feature": nc["feature"], "pixel": nc["pixel"],
                                 "closest_pairs": pairs}
        details["sets"][name] = {"feature": dfeat, "pixel": nc["distances"]["pixel"],
                                 "closest": closest, "pixel_nn": nc["nearest"]["pixel"]}
    return metrics, details


def privacy_warnings(privacy: PrivacySection) -> list[str]:
    """Lines for the console and metrics.json: test images that are copies of training images,
    and a near-copy check without a reference."""
    ex = privacy.get("reference")
    out = []
    if ex and ex.get("with_copy"):
        out.append(f"{ex['with_copy']} of {ex['reference_images']} real test image(s) have an "
                   "exact copy in the real train split (duplicates across splits: re-import with "
                   "medsynth data import --dedup); they are left out of the near-copy reference")
    for space in ("feature", "pixel"):
        reason = next((s[space].get("no_reference") for s in privacy["sets"].values()
                       if s[space].get("no_reference")), None)
        if reason:
            out.append(f"privacy ({space}s): no reference, no near-copy share reported: {reason}")
    return out
