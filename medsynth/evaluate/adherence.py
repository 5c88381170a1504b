"""Attribute adherence: does an image generated from "large, asymmetric, blue-grey" show that?

Applies where the real dataset carries the demo ground-truth attribute columns (derm or cxr)
and the synthetic set says which description each image was conditioned on. The *requested*
attributes of a sample are the ground truth of the real image whose stored description was used
(samples.csv ``description_source`` = ``store:<image_id>``); for free-text prompts, the few
attributes that can be read from the text (colours, border, asymmetry, diameter; side, zone).
The synthetic image is measured with :mod:`medsynth.pixel_attributes` (the same pixel measurements the
``attributes`` describer uses) and compared field by field.

Two references sit beside every figure: ``real`` (real test images measured against their own
ground truth: the measurement's noise floor) and ``shuffled`` (the synthetic measurement against
the request of a random other sample of the same class: what class conditioning alone explains).
Text conditioning works when the synthetic figure beats ``shuffled`` and approaches ``real``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

DERM_FIELDS = {"diameter_mm": "abs", "asymmetry": "exact", "border": "exact",
               "border_irregularity": "abs", "colors": "jaccard", "n_colors": "abs",
               "structures": "jaccard"}
CXR_FIELDS = {"side": "exact", "zone": "exact", "opacity_extent": "abs", "ctr": "abs"}
MAX_MEASURED = 300
"""At most this many images per set are measured (pixel measurement is not free)."""


def kind_of(columns: list[str]) -> str | None:
    """``derm`` or ``cxr`` when the dataset has that demo schema's attribute columns."""
    cols = set(columns)
    if {"diameter_mm", "asymmetry", "colors", "border"} <= cols:
        return "derm"
    if {"side", "zone", "ctr"} <= cols:
        return "cxr"
    return None


def _items(v: Any) -> set[str]:
    s = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
    return {t for t in s.split(";") if t and t != "none"}


def compare(kind: str, requested: dict[str, Any], measured: dict[str, Any]) -> dict[str, float]:
    """Per-field agreement: |error| for numbers, 1/0 for categories, Jaccard for sets."""
    fields = DERM_FIELDS if kind == "derm" else CXR_FIELDS
    out: dict[str, float] = {}
    for f, how in fields.items():
        if f not in requested or requested[f] is None or f not in measured:
            continue
        r, m = requested[f], measured[f]
        try:
            if how == "abs":
                out[f] = abs(float(r) - float(m))
            elif how == "exact":
                out[f] = float(str(r).strip() == str(m).strip()) if not isinstance(r, float) \
                    else float(int(r) == int(m))
            else:
                a, b = _items(r), _items(m)
                out[f] = 1.0 if not a and not b else len(a & b) / len(a | b)
        except (TypeError, ValueError):
            continue
    return out


_COLOR_WORDS = {"light_brown": r"light[- ]brown|tan", "dark_brown": r"dark[- ]brown",
                "black": r"\bblack", "blue_grey": r"blue[- ]?gr[ae]y|bluish",
                "red": r"\bred", "white": r"\bwhite"}


def parse_text(kind: str, text: str) -> dict[str, Any]:
    """Attributes a free-text prompt states explicitly (only those; the rest stay unknown)."""
    t = str(text or "").lower()
    out: dict[str, Any] = {}
    if kind == "derm":
        colors = [c for c, pat in _COLOR_WORDS.items() if re.search(pat, t)]
        if colors:
            out["colors"] = ";".join(colors)
            out["n_colors"] = len(colors)
        if re.search(r"irregular|ragged|jagged|notched", t):
            out["border"] = "irregular"
        elif re.search(r"regular|smooth", t) and "border" in t:
            out["border"] = "regular"
        if re.search(r"\bsymmetric", t):
            out["asymmetry"] = 0
        m = re.search(r"(\d+(?:\.\d+)?)\s*mm", t)
        if m:
            out["diameter_mm"] = float(m.group(1))
    else:
        for side in ("bilateral", "left", "right"):
            if re.search(rf"\b{side}\b", t):
                out["side"] = side
                break
        for zone in ("upper", "middle", "lower"):
            if re.search(rf"\b{zone}\b", t):
                out["zone"] = zone
                break
        if re.search(r"\bnormal\b|no (acute )?finding", t):
            out["side"] = "none"
    return out


def _measure(kind: str, array: np.ndarray, mm_per_px: float) -> dict[str, Any]:
    from medsynth.pixel_attributes import measure_cxr, measure_derm

    return measure_derm(array, mm_per_px) if kind == "derm" else measure_cxr(array)


def _gt(row: pd.Series, kind: str) -> dict[str, Any]:
    fields = DERM_FIELDS if kind == "derm" else CXR_FIELDS
    return {f: row[f] for f in fields if f in row.index and not pd.isna(row[f])}


def _mean_fields(rows: list[dict[str, float]]) -> dict[str, float | None]:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def adherence_report(real: Any, synth_sets: list[Any], *, seed: int = 0) -> dict[str, Any]:
    """Attribute adherence of every synthetic set, or a reason why it does not apply."""
    from medsynth.imaging.readers import read_image
    from medsynth.ui import track

    kind = kind_of(real.attribute_columns)
    if kind is None:
        return {"applies": False, "reason": f"{real.root}: no demo ground-truth attribute "
                "columns (derm or cxr schema)"}
    try:
        import medsynth.pixel_attributes  # noqa: F401
    except ImportError as e:
        return {"applies": False, "reason": f"medsynth.pixel_attributes unavailable ({e})"}
    rng = np.random.default_rng(seed)
    by_id = real.table.set_index("image_id", drop=False)
    first = real.load(real.table.iloc[0]).array
    real_size = int(first.shape[-1])
    real_mm = float(real.manifest.outputs.get("mm_per_px") or 20.0 / real_size)
    fov = real_mm * real_size  # the demo's field of view is fixed (20 mm), whatever the size

    # Reference: measurement noise on real test images.
    test = real.split("test")
    test = test.iloc[rng.permutation(len(test))[:MAX_MEASURED]]
    real_rows = []
    for _, row in track(list(test.iterrows()), "adherence: real test", total=len(test)):
        arr = real.load(row).array
        real_rows.append(compare(kind, _gt(row, kind), _measure(kind, arr, fov / arr.shape[-1])))
    result: dict[str, Any] = {"applies": True, "kind": kind, "fields": dict(
        DERM_FIELDS if kind == "derm" else CXR_FIELDS), "real": _mean_fields(real_rows),
        "n_real": len(real_rows), "sets": {}}
    for s in synth_sets:
        table = s.table
        table = table.iloc[rng.permutation(len(table))[:MAX_MEASURED]]
        requests, measured = [], []
        for _, row in track(list(table.iterrows()), f"adherence: {s.name}", total=len(table)):
            src = str(row.get("description_source", "") or "")
            req: dict[str, Any] = {}
            if src.startswith("store:") and src[6:] in by_id.index:
                ref = by_id.loc[src[6:]]
                if isinstance(ref, pd.DataFrame):
                    ref = ref.iloc[0]
                req = _gt(ref, kind)
            elif isinstance(row.get("description"), str):
                req = parse_text(kind, row["description"])
            if not req:
                continue
            arr = read_image(s.path_of(row)).array
            requests.append((str(row["class"]), req))
            measured.append(_measure(kind, arr, fov / arr.shape[-1]))
        if not requests:
            result["sets"][s.name] = {"n": 0, "reason": "no sample names its source description "
                                      "or states attributes in its prompt"}
            continue
        syn = [compare(kind, req, m) for (_, req), m in zip(requests, measured, strict=True)]
        shuffled = []
        for i, (cls, _) in enumerate(requests):
            same = [j for j, (c, _) in enumerate(requests) if c == cls and j != i]
            if same:
                j = same[int(rng.integers(len(same)))]
                shuffled.append(compare(kind, requests[j][1], measured[i]))
        result["sets"][s.name] = {"n": len(syn), "synthetic": _mean_fields(syn),
                                  "shuffled": _mean_fields(shuffled) if shuffled else {}}
    return result
