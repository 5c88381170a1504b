"""Report–image consistency: does each synthetic image show what its report says?

For every synthetic image that ships a report (``samples.csv`` column ``report``), the
attributes the report states are read back with :func:`medsynth.clinical_reports.parse_report` and
compared with those measured on the image by :mod:`medsynth.pixel_attributes` (derm and cxr, where the
pixels can be measured), field by field: |error| for numbers, agreement for categories, Jaccard
for sets. Reference: ``shuffled``, the same image's measurement against the report of a random
other image of the same class (what the class alone explains). Reports and images are
consistent when ``report`` beats ``shuffled``.

Also picks a few examples per class and set (image + report text) for report.html.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd

from medsynth.clinical_reports import parse_report
from medsynth.evaluate.adherence import CXR_FIELDS, DERM_FIELDS, compare

MAX_CHECKED = 300
"""At most this many images per set are measured."""
FIELDS = {"derm": {k: v for k, v in DERM_FIELDS.items() if k not in ("border_irregularity",
                                                                      "n_colors")},
          "cxr": {**CXR_FIELDS, "heart_size": "exact"}}


def _family(real: Any, synth: Any) -> str | None:
    from medsynth.evaluate.adherence import kind_of

    kind = kind_of(real.attribute_columns)
    if kind:
        return kind
    modality = str(synth.manifest.outputs.get("modality", "")).upper()
    return {"XC": "derm", "DX": "cxr", "CR": "cxr"}.get(modality)


def _as_compare(attrs: dict[str, Any]) -> dict[str, Any]:
    """Parsed report attributes in the measurement's form (``a;b`` sets, ints)."""
    out = dict(attrs)
    for k in ("colors", "structures"):
        if k in out:
            out[k] = ";".join(out[k]) if out[k] else "none"
    return out


def _measure(family: str, array: np.ndarray, mm_per_px: float) -> dict[str, Any]:
    from medsynth.pixel_attributes import measure_cxr, measure_derm

    if family == "derm":
        return measure_derm(array, mm_per_px)
    m = dict(measure_cxr(array))
    if m.get("ctr") is not None:
        m["heart_size"] = "enlarged" if float(m["ctr"]) > 0.5 else "normal"
    return m


def _cmp(family: str, stated: dict[str, Any], measured: dict[str, Any]) -> dict[str, float]:
    """Per-field agreement of a report's attributes with an image's measurement."""
    got = compare(family, stated, measured)
    if "heart_size" in stated and "heart_size" in measured:
        got["heart_size"] = float(stated["heart_size"] == measured["heart_size"])
    return {k: v for k, v in got.items() if k in FIELDS[family]}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def _count(rows: list[dict[str, float]]) -> dict[str, int]:
    keys = sorted({k for r in rows for k in r})
    return {k: sum(1 for r in rows if k in r) for k in keys}


def reports_report(real: Any, synth_sets: list[Any], *, seed: int = 0
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, examples): consistency per set and field; examples for report.html."""
    from medsynth.imaging.readers import read_image
    from medsynth.ui import track

    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"sets": {}}
    examples: list[dict[str, Any]] = []
    real_size = int(real.load(real.table.iloc[0]).array.shape[-1])
    fov = float(real.manifest.outputs.get("mm_per_px") or 20.0 / real_size) * real_size
    for s in synth_sets:
        table = s.table
        # "string" first: an all-empty column reads as float64, which refuses a "" fill
        has = (table["report"].astype("string").fillna("") != "" if "report" in table.columns
               else None)
        if has is None or not has.any():
            result["sets"][s.name] = {"n": 0, "reason": "no reports in the set (--report none)"}
            continue
        table = table[has]
        table = table[[(s.root / str(p)).is_file() for p in table["report"]]]
        if table.empty:
            result["sets"][s.name] = {"n": 0, "reason": "its report files are missing"}
            continue
        examples += _examples(s, table)
        family = _family(real, s)
        if family not in FIELDS:
            result["sets"][s.name] = {"n": 0, "reason": "attributes of this modality cannot be "
                                      "measured on the image (derm and cxr only)"}
            continue
        table = table.iloc[rng.permutation(len(table))[:MAX_CHECKED]]
        stated, measured, classes = [], [], []
        for _, row in track(list(table.iterrows()), f"reports: {s.name}", total=len(table)):
            text = (s.root / str(row["report"])).read_text("utf-8")
            attrs = _as_compare(parse_report(family, text))
            if not attrs:
                continue
            arr = read_image(s.path_of(row)).array
            stated.append(attrs)
            measured.append(_measure(family, arr, fov / arr.shape[-1]))
            classes.append(str(row["class"]))
        if not stated:
            result["sets"][s.name] = {"n": 0, "reason": "the reports state no measurable "
                                      "attribute"}
            continue
        fields = FIELDS[family]
        syn = [_cmp(family, a, m) for a, m in zip(stated, measured, strict=True)]
        shuffled = []
        for i, cls in enumerate(classes):
            same = [j for j, c in enumerate(classes) if c == cls and j != i]
            if same:
                shuffled.append(_cmp(family, stated[same[int(rng.integers(len(same)))]],
                                     measured[i]))
        result["sets"][s.name] = {"n": len(syn), "family": family, "fields": fields,
                                  "report": _mean(syn), "shuffled": _mean(shuffled),
                                  "n_per_field": _count(syn)}
    return result, examples


def _thumb(array: np.ndarray, size: int = 128) -> str:
    from PIL import Image

    from medsynth.mllm.request import display_uint8

    im = Image.fromarray(display_uint8(array))
    im = im.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _examples(s: Any, table: pd.DataFrame, per_class: int = 2) -> list[dict[str, Any]]:
    from medsynth.imaging.readers import read_image

    out = []
    for cls, grp in table.groupby("class", sort=True):
        for _, row in grp.head(per_class).iterrows():
            try:
                arr = read_image(s.path_of(row)).array
                text = (s.root / str(row["report"])).read_text("utf-8").strip()
            except Exception:  # an unreadable example is left out of the page, not fatal
                continue
            out.append({"set": s.name, "class": str(cls), "sample_id": str(row["sample_id"]),
                        "png": _thumb(arr), "report": text,
                        "writer": str(row.get("report_writer", "") or "")})
    return out


def reports_html(rep: dict[str, Any], examples: list[dict[str, Any]]) -> str:
    """The report.html section: consistency table and examples with their report text."""
    from medsynth.evaluate.html_report import render_section
    from medsynth.evaluate.report_context import reports_context

    return render_section(reports_context(rep, examples))
