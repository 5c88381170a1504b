"""Peak RSS of `medsynth train` on a set and on a 4x larger one: does memory grow with the data?

    .venv/bin/python -m benchmarks.memory_scale [--n 400] [--size 128] [--steps 10]

Two RGB datasets of ``--size`` px PNGs (random texture and a class-coloured square, made here),
N and 4N training images, each trained for a few steps of a tiny UNet with ``data_cache: memory``
(every image stacked in RAM, as before) and ``data_cache: disk`` (a memory-mapped stack in a
fresh $MEDSYNTH_CACHE; the pages a batch reads are handed back). Reported: the peak RSS of each
run (the whole process: torch, the text encoder, the data) and the growth from N to 4N; the
target is within +10 % on disk. Results: benchmarks/results/memory_scale.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import record, run_cli


def _dataset(root: Path, n: int, size: int) -> Path:
    import pandas as pd

    from medsynth.imaging.dataset import finish_dataset
    from medsynth.imaging.save import save_png

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        cls = ("red", "blue")[i % 2]
        a = rng.integers(0, 60, (3, size, size)).astype(np.uint8)
        s = size // 4
        a[0 if cls == "red" else 2, s:3 * s, s:3 * s] = 200
        rel = f"images/{cls}/{i:06d}.png"
        save_png(a, root / rel)
        rows.append({"image_id": f"{cls}_{i}", "path": rel, "class": cls, "split": "train"})
    finish_dataset(root, pd.DataFrame(rows), config={"memory_scale": n}, classes=["red", "blue"],
                   channels=3, dtype="uint8", modality="XC")
    return root


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="images of the smaller set")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args(argv or [])
    from medsynth.train.config import TrainConfig

    load0 = round(os.getloadavg()[0], 2)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        log = root / "log.txt"
        sets = {n: _dataset(root / f"ds{n}", n, a.size) for n in (a.n, 4 * a.n)}
        for mode in ("memory", "disk"):
            cfg = TrainConfig.tiny(max_steps=a.steps, batch_size=4, checkpoint_every=a.steps,
                                   mixed_precision="no", data_cache=mode)
            recipe = root / f"{mode}.yaml"
            recipe.write_text(cfg.to_yaml())
            for n, ds in sets.items():
                os.environ["MEDSYNTH_CACHE"] = str(root / f"cache-{mode}-{n}")
                r = run_cli(["train", str(ds), "--out", str(root / f"m-{mode}-{n}"), "--config",
                             str(recipe), "--threads", "1"], log, 1, trace_rss=True)
                runs[f"{mode}_{n}"] = r
                print(mode, n, r, flush=True)
    stack_mb = {n: round(n * 3 * a.size * a.size / 2**20, 1) for n in (a.n, 4 * a.n)}
    res: dict[str, Any] = {"load_average_1min_before": load0, "image_px": a.size,
                           "images": [a.n, 4 * a.n], "pixel_stack_mb": stack_mb, "runs": runs}
    for mode in ("memory", "disk"):
        p1, p4 = runs[f"{mode}_{a.n}"]["peak_rss_mb"], runs[f"{mode}_{4 * a.n}"]["peak_rss_mb"]
        res[f"{mode}_peak_growth"] = round(p4 / p1 - 1, 3)
    res["target_disk_growth"] = 0.10
    record("memory_scale", res)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
