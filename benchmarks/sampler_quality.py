"""Sample quality against sampling steps: FID of 10, 20, 50 DPM-Solver++ steps vs 250 DDPM steps.

    .venv/bin/python -m benchmarks.sampler_quality [--model M --real DATA] [--n 100] [--workdir W]
    .venv/bin/python -m benchmarks sampler_quality

Without ``--model`` it trains the ``make demo`` recipe (examples/derm-demo.yaml) on the derm
phantoms first (about 5 minutes on 2 idle cores). Every setting generates the same plan (same
classes, descriptions and per-image seeds) through ``medsynth generate``; one ``medsynth evaluate
--no-benchmark`` then scores all sets against the real test split with the same features, so the
FIDs differ only by the sampler. Also recorded: images/s of each ``generate`` run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import demo_model, record, run_cli

SETTINGS = [("dpmsolver++", 10), ("dpmsolver++", 20), ("dpmsolver++", 50), ("ddpm", 250)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--real", type=Path, help="the model's dataset (needed with --model)")
    ap.add_argument("--n", type=int, default=100, help="images per class per setting")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--workdir", type=Path)
    a = ap.parse_args(argv or [])
    tmp = None if a.workdir else tempfile.TemporaryDirectory()
    root = a.workdir or Path(tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count() or 1
    if a.model:
        if not a.real:
            ap.error("--model needs --real (the dataset the model was trained on)")
        model, real = a.model, a.real
    else:
        d = demo_model(root / "demo", threads=threads)
        model, real = d["model"], d["data"]
    log = root / "log.txt"
    rows, sets = [], []
    for sampler, steps in SETTINGS:
        name = f"{sampler.replace('++', 'pp')}-{steps}"
        out = root / name
        r = run_cli(["generate", str(model), "--class", "all", "--n", str(a.n), "--out", str(out),
                     "--sampler", sampler, "--steps", str(steps), "--guidance", str(a.guidance),
                     "--format", "png", "--seed", "0", "--resume"], log, threads)
        n_img = len(list((out).rglob("*.png")))
        rows.append({"set": name, "sampler": sampler, "steps": steps, "images": n_img,
                     "generate_wall_s": r["wall_s"],
                     "images_per_s": round(n_img / max(r["wall_s"], 1e-9), 2)})
        print(rows[-1], flush=True)
        sets.append(str(out))
    rep = root / "report"
    run_cli(["evaluate", "--real", str(real), "--synthetic", ",".join(sets), "--out", str(rep),
             "--no-benchmark", "--overwrite"], log, threads)
    m = json.loads((rep / "metrics.json").read_text())
    fid = m["fidelity"]
    by_name = {Path(k).name: v["overall"] for k, v in fid["sets"].items()}
    for r in rows:
        s = by_name.get(r["set"]) or fid["sets"].get(r["set"], {}).get("overall", {})
        r.update(fid=s.get("fid"), kid=s.get("kid"), precision=s.get("precision"),
                 coverage=s.get("coverage"))
    ref = fid["reference"]["overall"]
    res = {"model": str(model) if a.model else "make-demo recipe (examples/derm-demo.yaml)",
           "n_per_class": a.n, "guidance": a.guidance, "threads": threads,
           "load_average_1min": round(os.getloadavg()[0], 2),
           "fid_real_vs_real": ref["fid"], "kid_real_vs_real": ref["kid"], "settings": rows}
    if tmp:
        tmp.cleanup()
    record("sampler_quality", res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
