"""Numbers and sentences of the evaluation report, shared by the HTML page and the terminal."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def fmt(v: Any, digits: int = 3) -> str:
    """Number for a table: '-' for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def fmt_ci(d: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    """``mean [lo, hi]`` of a :func:`medsynth.evaluate.benchmark.mean_ci` dict."""
    if not d or d.get("mean") is None:
        return "–"
    sign = "+" if signed else ""
    m = f"{d['mean']:{sign}.{digits}f}"
    if d.get("lo") is None:
        return m
    return f"{m} [{d['lo']:{sign}.{digits}f}, {d['hi']:{sign}.{digits}f}]"


def fmt_pm(d: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    """``mean ±half-width`` (compact, for the terminal)."""
    if not d or d.get("mean") is None:
        return "–"
    m = f"{d['mean']:{'+' if signed else ''}.{digits}f}"
    return m if d.get("lo") is None else f"{m} ±{(d['hi'] - d['lo']) / 2:.{digits}f}"


def points(v: float | None, unit: str = "points") -> str:
    """A balanced-accuracy difference in percentage points: ``3.2 points``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f} {unit}"


def gain_text(a: dict[str, Any]) -> str:
    """One line per arm: gain over real-only with interval, verdict, detectable gain."""
    g = a["gain"]["balanced_accuracy"]
    pw = a.get("power") or {}
    return (f"{a['setting']} with real {a['fraction']}: balanced accuracy "
            f"{fmt_ci(g, signed=True)} vs real-only -> {a['verdict']} "
            f"(detectable: {points(pw.get('mde'))})")


def baseline_texts(a: dict[str, Any]) -> list[str]:
    """The synthetic arm against augmentation and its share of the oracle's gain."""
    out = []
    if "vs_augment" in a:
        g = a["vs_augment"]["balanced_accuracy"]
        out.append(f"{a['setting']} vs real+augment (real {a['fraction']}): "
                   f"{fmt_ci(g, signed=True)} -> {a['vs_augment_verdict']}")
    rec = a.get("oracle_recovery")
    if rec is not None:
        if rec.get("mean") is None:
            out.append(f"{a['setting']} (real {a['fraction']}): share of the oracle gain not "
                       f"defined ({rec.get('reason')})")
        else:
            lo = "–" if rec.get("lo") is None else f"{100 * rec['lo']:.0f}"
            hi = "–" if rec.get("hi") is None else f"{100 * rec['hi']:.0f}"
            out.append(f"{a['setting']} (real {a['fraction']}): synthetic recovers "
                       f"{100 * rec['mean']:.0f} % [{lo}, {hi}] of the oracle gain "
                       f"({fmt(rec.get('oracle_gain'), 3)})")
    return out


def detects(bench: dict[str, Any], target: float = 0.05) -> bool:
    mdes = [a["power"]["mde"] for a in bench["arms"] if a.get("power")]
    return bool(mdes) and max(mdes) <= target


def power_text(bench: dict[str, Any], target: float = 0.05) -> str:
    """The set-up's power in one sentence: can it detect a ``target`` gain?"""
    mdes = [a["power"]["mde"] for a in bench["arms"] if a.get("power")]
    if not mdes:
        return "No gains measured."
    lo, hi = min(mdes), max(mdes)
    span = points(lo) if abs(hi - lo) < 5e-4 else f"{100 * lo:.1f}-{points(hi)}"
    verdict = (f"a {100 * target:.0f}-point gain is detectable" if hi <= target else
               f"a {100 * target:.0f}-point gain is NOT detectable everywhere")
    return (f"Smallest gain in balanced accuracy this set-up detects (80 % power, 5 % level; "
            f"{bench['seeds']} seeds, {bench.get('bootstrap', {}).get('test_images', '?')} test "
            f"images): {span}; {verdict}.")


def verdict_class(v: str | None) -> str:
    """CSS class of a verdict: helps / hurts / neutral."""
    v = v or ""
    return "helps" if v.startswith("helps") else "hurts" if v.startswith("hurts") else "neutral"
