"""``medsynth judge show``: the score distribution of each class, and its worst and best images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsynth.judging.judged import JudgedFolder, class_summary
from medsynth.judging.judges import VERDICTS_NAME

BINS = 10
"""Histogram bins of the score (0-1)."""
BAR = " ▁▂▃▄▅▆▇█"


def histogram(scores: list[float], bins: int = BINS) -> str:
    """A one-line histogram of scores in [0, 1] (block characters, one per bin)."""
    if not scores:
        return ""
    counts, _ = np.histogram(np.clip(scores, 0, 1), bins=bins, range=(0, 1))
    top = max(int(counts.max()), 1)
    return "".join(BAR[int(round(c / top * (len(BAR) - 1)))] if c else "·" for c in counts)


def show_lines(j: JudgedFolder, n: int = 3, cls: str | None = None) -> list[tuple[str, Any]]:
    """What ``judge show`` prints, as (kind, payload) pairs: ``head``, ``class``, ``image``."""
    m = j.manifest
    status, n_images = j.status, m.outputs.get("n_images")
    if status == "complete" and isinstance(n_images, int) and len(j.records) < n_images:
        # the manifest says complete but the verdicts file lost lines since (cut, edited)
        status = f"incomplete: {j.root / VERDICTS_NAME} has lost verdicts since judging"
    out: list[tuple[str, Any]] = [("head", {
        "root": str(j.root), "status": status, "backend": m.config.get("backend"),
        "model": m.config.get("judge_model"), "criteria": j.criteria.full_version,
        "n": len(j.records), "n_images": m.outputs.get("n_images")})]
    summ = class_summary(j.records, j.criteria)
    try:
        s = j.source(check=False)
        paths = {str(r["sample_id"]): str(r[s.image_column]) for _, r in s.table.iterrows()}
        out[0][1]["set"] = str(s.root)
    except Exception:  # the set may be gone; the verdicts still say enough
        paths = {}
    for c, info in summ.items():
        if cls is not None and c != cls:
            continue
        rs = [r for r in j.records if r.cls == c and r.ok]
        out.append(("class", {"class": c, **info,
                              "histogram": histogram([r.score for r in rs])}))
        ranked = sorted(rs, key=lambda r: (r.score, r.sample_id))
        for label, pick in (("worst", ranked[:n]), ("best", ranked[::-1][:n])):
            for r in pick:
                missed = [v.id for v in r.verdicts if v.verdict == "not_met"]
                out.append(("image", {"which": label, "sample_id": r.sample_id,
                                      "score": r.score, "valid": r.image_valid,
                                      "not_met": missed, "path": paths.get(r.sample_id, "")}))
    return out


def print_show(path: str | Path, n: int = 3, cls: str | None = None) -> None:
    from rich.table import Table

    from medsynth.judging.judged import open_judged
    from medsynth.ui import out as stdout

    j = open_judged(path)
    table: Table | None = None
    for kind, p in show_lines(j, n, cls):
        if kind == "head":
            stdout.print(f"[bold]{p['root']}[/] · {p['status']} · {p['n']} of {p['n_images']} "
                         f"image(s) judged · {p['backend']} ({p['model']}) · {p['criteria']}"
                         + (f" · files in {p['set']}" if p.get("set") else ""))
        elif kind == "class":
            if table is not None:
                stdout.print(table)
            q = p["score_quantiles"] or [0] * 5
            stdout.rule(f"[bold]{p['class']}[/]: {p['n']} judged, {p['failed']} failed, "
                        f"valid {_pct(p['valid'])}")
            stdout.print(f"score mean {_num(p['score_mean'])} · min {q[0]:.2f} · "
                         f"q1 {q[1]:.2f} · median {q[2]:.2f} · q3 {q[3]:.2f} · max {q[4]:.2f}")
            stdout.print(f"score 0 {p['histogram']} 1", markup=False)
            crit = ", ".join(f"{k} {_pct(v['met_rate'])}"
                             + (f" ({_pct(v['unsure'])} unsure)" if v["unsure"] else "")
                             for k, v in p["criteria"].items())
            stdout.print(f"met: {crit}", markup=False)
            table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            for col in ("", "sample", "score", "not met", "file"):
                table.add_column(col)
        elif table is not None:
            table.add_row(p["which"], p["sample_id"], f"{p['score']:.2f}"
                          + ("" if p["valid"] else " (invalid)"),
                          ", ".join(p["not_met"]) or "-", p["path"])
    if table is not None:
        stdout.print(table)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
