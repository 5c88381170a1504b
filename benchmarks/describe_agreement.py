"""How well the offline ``attributes`` describer recovers the demo phantoms' ground truth, and
how fast it runs.

    python -m benchmarks describe_agreement            # writes benchmarks/results/describe_agreement.json
    python benchmarks/describe_agreement.py --derm DIR --cxr DIR   # on existing demo datasets

Targets (issue 4): correlation >= 0.8 on size, >= 70% exact agreement on categorical attributes,
>= 100 images/s on this machine.

The derm phantoms are measured at 64 px (the demo default, the target) and again at 128 px:
dots/globules are only a pixel or two across at 64 px. The measurement thresholds were
calibrated on seed 0; these sets use seed 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DERM = {"n_per_class": 200, "size": 64, "seed": 1}
DERM_128 = {"n_per_class": 200, "size": 128, "seed": 1}
CXR = {"n_per_class": 100, "size": 128, "seed": 1}


def _corr(a: pd.Series, b: pd.Series) -> float:
    a, b = a.astype(float), b.astype(float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _acc(a: pd.Series, b: pd.Series) -> float:
    return float((a.astype(str).values == b.astype(str).values).mean())


def _joined(v: Any) -> str:
    if isinstance(v, list):
        return ";".join(v) if v else "none"
    return str(v)


def table(dataset: Path, store: Path) -> pd.DataFrame:
    """labels.csv joined with the attributes backend's records (columns ``<attr>`` and ``<attr>_m``)."""
    from medsynth.store import open_store

    labels = pd.read_csv(dataset / "labels.csv", keep_default_na=False)
    recs = open_store(store).by_image(backend="attributes")
    meas = pd.DataFrame([{"image_id": k, **{f"{a}_m": _joined(v) for a, v in r.attributes.items()}}
                         for k, r in recs.items()])
    return labels.merge(meas, on="image_id", how="inner")


def derm_agreement(t: pd.DataFrame) -> dict[str, Any]:
    colors = ("light_brown", "dark_brown", "black", "blue_grey", "red", "white")
    structs = ("pigment_network", "dots_globules", "streaks", "blue_white_veil")
    res: dict[str, Any] = {
        "n": len(t),
        "diameter_r": _corr(t["diameter_mm"], t["diameter_mm_m"]),
        "diameter_mae_mm": float((t["diameter_mm"] - t["diameter_mm_m"].astype(float)).abs().mean()),
        "asymmetry_acc": _acc(t["asymmetry"], t["asymmetry_m"]),
        "border_acc": _acc(t["border"], t["border_m"]),
        "border_irregularity_r": _corr(t["border_irregularity"], t["border_irregularity_m"]),
        "n_colors_acc": _acc(t["n_colors"], t["n_colors_m"]),
        "colors_exact_acc": _acc(t["colors"], t["colors_m"].replace("none", "")),
        "structures_exact_acc": _acc(t["structures"], t["structures_m"]),
        "skin_tone_acc": _acc(t["skin_tone"], t["skin_tone_m"]),
        "skin_tone_within1": float((t["skin_tone"] - t["skin_tone_m"].astype(int)).abs().le(1).mean()),
        "hair_r": _corr(t["hair"], t["hair_m"]),
        "center_error_px": float(np.hypot(t["center_x"] - t["center_x_m"].astype(float),
                                          t["center_y"] - t["center_y_m"].astype(float)).mean()),
    }
    for c in colors:
        res[f"color_{c}_acc"] = float((t["colors"].str.split(";").apply(lambda s, c=c: c in s)
                                       == t["colors_m"].str.split(";").apply(lambda s, c=c: c in s)).mean())
    for s in structs:
        res[f"structure_{s}_acc"] = float((t["structures"].str.contains(s)
                                           == t["structures_m"].str.contains(s)).mean())
    return res


def cxr_agreement(t: pd.DataFrame) -> dict[str, Any]:
    finding = t["side"] != "none"
    return {
        "n": len(t),
        "side_acc": _acc(t["side"], t["side_m"]),
        "zone_acc": _acc(t["zone"], t["zone_m"]),
        "zone_acc_on_findings": _acc(t.loc[finding, "zone"], t.loc[finding, "zone_m"]),
        "opacity_extent_r": _corr(t["opacity_extent"], t["opacity_extent_m"]),
        "ctr_r": _corr(t["ctr"], pd.to_numeric(t["ctr_m"], errors="coerce").fillna(0)),
        "ctr_mae": float((t["ctr"] - pd.to_numeric(t["ctr_m"], errors="coerce").fillna(0)).abs().mean()),
        "heart_width_r": _corr(t["heart_width_px"], t["heart_width_px_m"]),
        "thorax_width_r": _corr(t["thorax_width_px"], t["thorax_width_px_m"]),
        "cardiomegaly_acc": _acc(t["ctr"] > 0.5, t["heart_size_m"] == "enlarged"),
    }


def describe(dataset: Path, store: Path, concurrency: int) -> dict[str, Any]:
    import time

    from medsynth.describe.config import DescribeConfig
    from medsynth.describe.measured import measure_array
    from medsynth.describe.run import run_describe
    from medsynth.imaging.dataset import open_dataset
    from medsynth.imaging.readers import read_image

    load_before = os.getloadavg()[0]
    s = run_describe(DescribeConfig(dataset=str(dataset), out=str(store), overwrite=True,
                                    concurrency=concurrency, split="all"), progress=False)
    # CPU time of read + measure in this process: a rate that does not depend on how busy the
    # shared machine is (the wall-clock rate above does).
    ds = open_dataset(dataset)
    family = "derm" if ds.modality == "XC" else "cxr"
    mm = ds.manifest.outputs.get("mm_per_px")
    paths = [ds.path_of(r) for _, r in ds.table.head(100).iterrows()]

    def measure_file(path: Path) -> None:
        img = read_image(path)
        measure_array(family, img.array, mm or 20.0 / img.array.shape[-1])

    measure_file(paths[0])
    t0 = time.process_time()
    for p in paths:
        measure_file(p)
    cpu = (time.process_time() - t0) / len(paths)
    return {"described": s.described, "failed": s.failed, "seconds": round(s.seconds, 2),
            "images_per_s": round(s.rate, 1), "workers": concurrency,
            "load_average_1min": round(max(load_before, os.getloadavg()[0]), 1),
            "cpu_ms_per_image": round(cpu * 1000, 2),
            "images_per_cpu_s": round(1 / cpu, 1) if cpu > 0 else None}


def run(derm: Path | None = None, cxr: Path | None = None, concurrency: int = 2) -> dict[str, Any]:
    from medsynth.data.demo.common import DemoConfig, write_demo

    os.environ.setdefault("MEDSYNTH_NO_PROGRESS", "1")
    out: dict[str, Any] = {}
    sets: list[tuple[str, str, Path | None, dict[str, int], Any]] = [
        ("derm", "derm", derm, DERM, derm_agreement), ("cxr", "cxr", cxr, CXR, cxr_agreement)]
    if derm is None and cxr is None:
        sets.insert(1, ("derm_128", "derm", None, DERM_128, derm_agreement))
    with tempfile.TemporaryDirectory() as tmp:
        for name, demo, given, spec, fn in sets:
            ds = given
            if ds is None:
                ds = Path(tmp) / name
                write_demo(DemoConfig(demo=demo, out=str(ds), **spec))  # type: ignore[arg-type]
            store = Path(tmp) / f"{name}_store"
            speed = describe(ds, store, concurrency)
            size = json.loads((ds / "medsynth.json").read_text())["outputs"].get("size")
            out[name] = {"dataset": {"size_px": size, "n_images": speed["described"] + speed["failed"]},
                         "speed": speed, "agreement": fn(table(ds, store))}
    return out


def main() -> dict[str, Any]:
    from benchmarks.common import record

    res = run()
    record("describe_agreement", res)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--derm", type=Path)
    p.add_argument("--cxr", type=Path)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--no-record", action="store_true", help="print only, do not write results/")
    a = p.parse_args()
    if a.derm or a.cxr or a.no_record:
        print(json.dumps(run(a.derm, a.cxr, a.concurrency), indent=2))
    else:
        main()
