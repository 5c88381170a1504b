"""Agreement of the measurements with the demo phantoms' ground truth (small samples; the full
figures are in benchmarks/describe_agreement.py and docs/describe.md)."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.measure import measure_cxr, measure_derm

derm_demo = pytest.importorskip("medsynth.data.demo.derm")
cxr_demo = pytest.importorskip("medsynth.data.demo.cxr")


def test_derm_demo_agreement() -> None:
    size = 64
    rows = []
    for cls in derm_demo.CLASSES:
        for i in range(12):
            arr, truth = derm_demo.render(cls, i, size, 7)
            rows.append((truth, measure_derm(arr, derm_demo.FOV_MM / size)))
    d_true = np.array([t["diameter_mm"] for t, _ in rows])
    d_meas = np.array([m["diameter_mm"] for _, m in rows])
    # Robust figures on a small sample (a few low-contrast lesions are over-segmented).
    err = np.abs(d_true - d_meas)
    assert np.median(err) < 1.0 and np.mean(err < 2.0) > 0.8
    assert np.mean([t["border"] == m["border"] for t, m in rows]) > 0.6
    assert np.mean([abs(t["skin_tone"] - m["skin_tone"]) <= 1 for t, m in rows]) > 0.8


def test_cxr_demo_agreement() -> None:
    size = 96
    rows = []
    for cls in cxr_demo.CLASSES:
        for i in range(6):
            arr, truth = cxr_demo.render(cls, i, size, 7)
            rows.append((truth, measure_cxr(arr)))
    assert np.mean([t["side"] == m["side"] for t, m in rows]) >= 0.65
    assert np.mean([(t["ctr"] > 0.5) == (m["ctr"] > 0.5) for t, m in rows]) >= 0.65
    thorax = np.corrcoef([t["thorax_width_px"] for t, _ in rows],
                         [m["thorax_width_px"] for _, m in rows])[0, 1]
    assert thorax > 0.8
