"""Near-copies: is a synthetic image closer to a private real image than real images ever are?

For every synthetic image, the distance to its nearest *private* real image (the generator's
training images; for a twin, the images it stands for), in two spaces: feature space (cosine
distance of EfficientNet-Lite0 features: same content) and pixel space (RMSE in [0, 1] at the
measuring size: same pixels). A synthetic image is a *near-copy* when it is closer to a private
image than all but ``q`` (default 1 %) of held-out real images are to their nearest private
image: held-out real images are what "different patients" look like, so their distances
calibrate the threshold. A generator that does not copy shows a near-copy share close to ``q``;
a copying one shows much more.

Shared by ``evaluate`` (its privacy section) and ``generate --twin`` (the twin's own check), so
both report the same figures for the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

NEAR_COPY_QUANTILE = 0.01
MIN_REFERENCE = 5
"""Fewest held-out real images (with a private image that is not their own copy) that can
calibrate a threshold; below it the check says "no reference" instead of reporting a share."""
EXACT_RMSE = 1e-6
"""Pixel RMSE (in [0, 1]) at or below which two real images are the same image (an exact
duplicate, after resizing to the measuring size)."""
"""Default q: the share of held-out real images that count as "as close as a copy"."""
METHOD = "nearest private real image; threshold = quantile {q} of held-out real -> private real " \
         "distances, exact duplicates and shared groups excluded"


class _NearCopySummary(TypedDict):
    threshold: float | None
    near_copy_share: float | None
    expected_share: float
    n_reference: int
    n_near_copies: int | None
    synth_median_nn: float | None
    synth_min_nn: float | None
    real_median_nn: float | None
    real_min_nn: float | None


class NearCopySummary(_NearCopySummary, total=False):
    """One space's near-copy figures (metrics.json ``privacy.sets.<set>.feature|pixel``)."""

    no_reference: str
    """Why there is no threshold (too few held-out images, or they are copies)."""


class ExcludedCounts(TypedDict):
    """Pairs and images left out of the calibration (metrics.json ``privacy.reference``)."""

    exact_pairs: int
    group_pairs: int
    with_copy: int
    reference_images: int
    kept: int


class ReferenceDistances(TypedDict):
    """:func:`reference_distances`: held-out real -> nearest private real, per space."""

    feature: torch.Tensor
    pixel: torch.Tensor
    excluded: ExcludedCounts


class SpacePair(TypedDict):
    feature: torch.Tensor
    pixel: torch.Tensor


class NearCopies(TypedDict):
    """:func:`near_copies`: summaries, distances ``(N,)`` and nearest private indices ``(N,)``."""

    feature: NearCopySummary
    pixel: NearCopySummary
    distances: SpacePair
    nearest: SpacePair


Groups = list[tuple[list[Any], list[Any]]]
"""(private labels, reference labels) per grouping column (labels are any csv value)."""


def cosine_nn(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024
              ) -> tuple[torch.Tensor, torch.Tensor]:
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


def pixel_nn(a: torch.Tensor, b: torch.Tensor, chunk: int = 256
             ) -> tuple[torch.Tensor, torch.Tensor]:
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


def near_copy_summary(d_synth: torch.Tensor, d_ref: torch.Tensor, q: float) -> NearCopySummary:
    """Threshold (quantile ``q`` of the reference distances), near-copy share and distance stats.

    Too few reference distances (:data:`MIN_REFERENCE`), or a threshold of 0 (the held-out
    images are copies of the private ones), give no threshold and no share, with
    ``no_reference`` saying why."""
    thr = float(np.quantile(d_ref.numpy(), q)) if len(d_ref) >= MIN_REFERENCE else None
    reason = None
    if thr is None:
        reason = (f"{len(d_ref)} held-out real image(s) with a distinct private image to compare "
                  f"to (at least {MIN_REFERENCE} needed)")
    elif thr <= 0:
        reason = "held-out real images are copies of private ones (threshold 0)"
        thr = None
    share = float((d_synth <= thr).float().mean()) if thr is not None and len(d_synth) else None
    # cast: the optional no_reference key sits in the middle (metrics.json's key order)
    return cast(NearCopySummary, {
        "threshold": thr, "near_copy_share": share, "expected_share": q,
        **({"no_reference": reason} if reason else {}), "n_reference": int(len(d_ref)),
        "n_near_copies": int((d_synth <= thr).sum()) if thr is not None else None,
        "synth_median_nn": float(d_synth.median()) if len(d_synth) else None,
        "synth_min_nn": float(d_synth.min()) if len(d_synth) else None,
        "real_median_nn": float(d_ref.median()) if len(d_ref) else None,
        "real_min_nn": float(d_ref.min()) if len(d_ref) else None,
    })


def reference_distances(private_x: torch.Tensor, reference_x: torch.Tensor,
                        f_private: torch.Tensor, f_reference: torch.Tensor,
                        groups: Groups | None = None, chunk: int = 256) -> ReferenceDistances:
    """Held-out real -> nearest private real distances (feature and pixel): the calibration.

    A held-out image's copy among the private images says nothing about how close *different*
    patients come, so pairs that are the same image (pixel RMSE <= :data:`EXACT_RMSE`) or share
    a group are left out: ``groups`` holds (private labels, reference labels) per grouping
    (duplicate group, patient/volume group; None = no group). A held-out image with no other
    private image drops out. Returns ``{"feature", "pixel"}`` distances (finite, the images
    kept) and ``excluded`` counts.
    """
    import torch
    import torch.nn.functional as F

    codes = []
    for priv, ref in groups or []:
        index: dict[Any, int] = {}
        enc = [[index.setdefault(v, len(index)) if _label(v) else -1 for v in side]
               for side in (priv, ref)]
        codes.append((torch.tensor(enc[0]), torch.tensor(enc[1])))
    pf = private_x.reshape(len(private_x), -1).float()
    dim = pf.shape[1] if len(private_x) else 1
    fn = F.normalize(f_private.float(), dim=1)
    dfeat, dpix = [], []
    exact = grouped = copied = 0
    for i in range(0, len(reference_x), chunk):
        rf = reference_x[i:i + chunk].reshape(-1, dim).float()
        dp = torch.cdist(rf, pf) / np.sqrt(dim)
        df = (1.0 - F.normalize(f_reference[i:i + chunk].float(), dim=1) @ fn.T).clamp_min(0)
        same = dp <= EXACT_RMSE
        exact += int(same.sum())
        copied += int(same.any(dim=1).sum())
        mask = same.clone()
        for pc, rc in codes:
            r = rc[i:i + chunk]
            g = (r[:, None] == pc[None, :]) & (r[:, None] >= 0)
            grouped += int((g & ~mask).sum())
            mask |= g
        dp, df = dp.masked_fill(mask, float("inf")), df.masked_fill(mask, float("inf"))
        dpix.append(dp.min(dim=1).values if dp.shape[1] else torch.full((len(rf),), float("inf")))
        dfeat.append(df.min(dim=1).values if df.shape[1] else torch.full((len(rf),), float("inf")))
    dp = torch.cat(dpix) if dpix else torch.zeros(0)
    df = torch.cat(dfeat) if dfeat else torch.zeros(0)
    keep = torch.isfinite(dp) & torch.isfinite(df)
    return {"feature": df[keep], "pixel": dp[keep],
            "excluded": {"exact_pairs": exact, "group_pairs": grouped, "with_copy": copied,
                         "reference_images": int(len(keep)), "kept": int(keep.sum())}}


def _label(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and v != v) and str(v) != ""


def near_copies(private_x: torch.Tensor, f_private: torch.Tensor, synth_x: torch.Tensor,
                f_synth: torch.Tensor, reference: ReferenceDistances, q: float) -> NearCopies:
    """Nearest private image of every synthetic image, and the near-copy summary in both spaces.

    Returns ``{"feature": summary, "pixel": summary, "distances": {"feature": d, "pixel": d},
    "nearest": {"feature": index, "pixel": index}}`` (indices into the private images).
    """
    dfeat, ifeat = cosine_nn(f_synth, f_private)
    dpix, ipix = pixel_nn(synth_x, private_x)
    return {"feature": near_copy_summary(dfeat, reference["feature"], q),
            "pixel": near_copy_summary(dpix, reference["pixel"], q),
            "distances": {"feature": dfeat, "pixel": dpix},
            "nearest": {"feature": ifeat, "pixel": ipix}}


def real_groups(table: pd.DataFrame | None, private_ids: Sequence[str],
                reference_ids: Sequence[str]) -> Groups:
    """(private labels, reference labels) of each grouping column labels.csv has
    (``dup_group``, ``split_group``), for :func:`reference_distances`."""
    if table is None:
        return []
    out: Groups = []
    for col in ("dup_group", "split_group"):
        if col in table.columns:
            by_id = dict(zip(table["image_id"].astype(str), table[col], strict=True))
            out.append(([by_id.get(str(i)) for i in private_ids],
                        [by_id.get(str(i)) for i in reference_ids]))
    return out

