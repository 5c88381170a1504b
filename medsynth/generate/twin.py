"""The synthetic twin's near-copy check, run by ``generate --twin`` on the finished set.

A twin (MedCoDi-M's anonymisation use) has one synthetic image per real image, same class (and
the real image's own description). Before it is shared, the run measures whether any twin is
as close to a real image as a copy would be: the method of ``medsynth evaluate``'s privacy
section (:mod:`medsynth.metrics.privacy`, the same features, size and threshold), with

- private images: the real images the twin stands for;
- reference: held-out real images of the same dataset and classes (the ``test`` split, else
  ``val``), whose nearest-private distances say how close *different patients* come; the
  near-copy threshold is their ``q`` quantile, so about ``q`` of twins fall under it by chance.

It also reports how often a twin's nearest real image is the very image it stands for
(linkage), against chance (1 / number of real images). Writes ``SYNTH/privacy.csv``.

What this does not give: a formal privacy guarantee (no differential privacy; the generator
trained on the real images and can memorise them), protection against membership inference on
the model, or safety at high ``--strength`` from the image (the twin then keeps the real image's
layout: expect near-copies and high linkage as strength falls).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsynth.artifacts import atomic_write_bytes
from medsynth.generate.plans import ImageSource
from medsynth.imaging.readers import read_image
from medsynth.metrics.features import INPUT_SIZE, FeatureExtractor
from medsynth.metrics.images import measure_size, stack_images
from medsynth.metrics.privacy import (
    METHOD,
    NEAR_COPY_QUANTILE,
    near_copies,
    real_groups,
    reference_distances,
)
from medsynth.synthset import IMAGE_COLUMNS

PRIVACY_CSV = "privacy.csv"
REFERENCE_SPLITS = ("test", "val")
"""Held-out splits that calibrate the threshold, in order of preference."""


def twin_privacy(out: Path, table: pd.DataFrame, twin: ImageSource, *, device: str,
                 q: float = NEAR_COPY_QUANTILE) -> dict[str, Any]:
    """Near-copy figures of a finished twin set (module doc); writes ``out/privacy.csv``."""
    from medsynth.ui import console, track

    ds = twin.dataset
    assert ds is not None
    items = twin.by_id()
    private_ids = list(dict.fromkeys(str(i) for i in table["twin_of"]))
    classes = sorted({items[i].cls for i in private_ids})
    held = ds.table[ds.table["class"].isin(classes)]
    ref_split = next((s for s in REFERENCE_SPLITS if s not in (twin.splits or [])
                      and not held[held["split"] == s].empty), None)
    if ref_split is None:
        reason = (f"no held-out real images ({' or '.join(REFERENCE_SPLITS)} split) of the twin's "
                  f"classes in {ds.root} to calibrate the near-copy threshold")
        console.print(f"[yellow]warning:[/] twin privacy check skipped: {reason}", soft_wrap=True)
        return {"skipped": reason}
    ref_rows = held[held["split"] == ref_split]
    column = next(c for c in IMAGE_COLUMNS if c in table.columns
                  and table[c].fillna("").astype(str).ne("").all())

    private = [twin.load(items[i]).array for i in track(private_ids, "twin check: real images")]
    reference = [ds.load(r).array for _, r in track(list(ref_rows.iterrows()),
                                                    f"twin check: real {ref_split} images")]
    synth = [read_image(out / str(p)).array for p in track(list(table[column]),
                                                            "twin check: twin images")]
    size = measure_size(private[0].shape)
    px, rx, sx = (stack_images(a, size) for a in (private, reference, synth))
    fx = FeatureExtractor(size=INPUT_SIZE, device=device)
    fp, fr, fs = fx(px), fx(rx), fx(sx)
    ref = reference_distances(px, rx, fp, fr, groups=real_groups(
        ds.table, private_ids, [str(i) for i in ref_rows["image_id"]]))
    nc = near_copies(px, fp, sx, fs, ref, q)
    pos = {i: k for k, i in enumerate(private_ids)}
    own = np.array([pos[str(i)] for i in table["twin_of"]])
    near = {k: nc["nearest"][k].numpy() for k in ("feature", "pixel")}
    dist = {k: nc["distances"][k].numpy() for k in ("feature", "pixel")}
    frame = pd.DataFrame({
        "sample_id": table["sample_id"].astype(str), "twin_of": table["twin_of"].astype(str),
        "nn_feature_distance": dist["feature"],
        "nn_feature_image_id": [private_ids[int(i)] for i in near["feature"]],
        "nn_pixel_distance": dist["pixel"],
        "nn_pixel_image_id": [private_ids[int(i)] for i in near["pixel"]],
        "near_copy_feature": _flags(dist["feature"], nc["feature"]["threshold"]),
        "near_copy_pixel": _flags(dist["pixel"], nc["pixel"]["threshold"]),
    })
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    atomic_write_bytes(out / PRIVACY_CSV, buf.getvalue().encode("utf-8"))
    result = {
        "method": METHOD.format(q=q), "file": PRIVACY_CSV, "quantile": q,
        "reference_split": ref_split, "n_reference": len(reference), "n_private": len(private),
        "n_twins": len(synth), "image_size": size,
        "feature_extractor": {"name": fx.name, "input_size": INPUT_SIZE},
        "feature": nc["feature"], "pixel": nc["pixel"], "reference": ref["excluded"],
        "nearest_is_own": {
            "feature": float((near["feature"] == own).mean()),
            "pixel": float((near["pixel"] == own).mean()),
            "chance": 1.0 / len(private_ids),
        },
    }
    f, p = nc["feature"], nc["pixel"]
    ex = ref["excluded"]
    if ex["with_copy"]:
        console.print(f"[yellow]warning:[/] {ex['with_copy']} of {ex['reference_images']} real "
                      f"{ref_split} image(s) are exact copies of images the twin stands for; "
                      "they are left out of the near-copy reference", soft_wrap=True)
    if f["threshold"] is None or p["threshold"] is None:
        why = f.get("no_reference") or p.get("no_reference")
        share = f"near-copy share: no reference ({why})"
        console.print(f"[yellow]warning:[/] twin privacy check has no reference: {why}; no "
                      "near-copy share is reported", soft_wrap=True)
    else:
        share = (f"near-copy share {f['near_copy_share']:.3f} (features) / "
                 f"{p['near_copy_share']:.3f} (pixels), expected about {q:g} against real "
                 f"{ref_split} images")
    console.print(
        f"twin privacy check: {share}; nearest real image is the twin's own for "
        f"{result['nearest_is_own']['feature']:.1%} (features) / "
        f"{result['nearest_is_own']['pixel']:.1%} (pixels), chance {1 / len(private_ids):.1%}; "
        f"per image: {out / PRIVACY_CSV}", soft_wrap=True)
    return result


def _flags(d: np.ndarray, threshold: float | None) -> Any:
    """1 where a twin is a near-copy; empty cells without a threshold (no reference)."""
    if threshold is None:
        return pd.array([pd.NA] * len(d), dtype="Int64")
    return (d <= threshold).astype(int)
