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

from typing import Any

import numpy as np

NEAR_COPY_QUANTILE = 0.01
"""Default q: the share of held-out real images that count as "as close as a copy"."""
METHOD = "nearest private real image; threshold = quantile {q} of held-out real -> private real " \
         "distances"


def cosine_nn(a: Any, b: Any, chunk: int = 1024) -> tuple[Any, Any]:
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


def pixel_nn(a: Any, b: Any, chunk: int = 256) -> tuple[Any, Any]:
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


def near_copy_summary(d_synth: Any, d_ref: Any, q: float) -> dict[str, Any]:
    """Threshold (quantile ``q`` of the reference distances), near-copy share and distance stats."""
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


def reference_distances(private_x: Any, reference_x: Any, f_private: Any,
                        f_reference: Any) -> dict[str, Any]:
    """Held-out real -> nearest private real distances (feature and pixel): the calibration."""
    return {"feature": cosine_nn(f_reference, f_private)[0],
            "pixel": pixel_nn(reference_x, private_x)[0]}


def near_copies(private_x: Any, f_private: Any, synth_x: Any, f_synth: Any,
                reference: dict[str, Any], q: float) -> dict[str, Any]:
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
