"""Run benchmarks and rewrite the generated part of docs/benchmarks.md.

    python -m benchmarks                 # all
    python -m benchmarks startup train_speed
    python -m benchmarks --report-only   # only regenerate docs/benchmarks.md from results/

All of them take about two hours on the 2-core CPU VM (recipe_quality alone trains two models
for 30 minutes each, side by side); each also runs alone as ``python -m benchmarks.NAME --help``.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import traceback
from pathlib import Path

from benchmarks.common import RESULTS

ALL = ["startup", "demo_speed", "describe_agreement", "describe_engine", "train_speed",
       "train_flops", "sample_speed", "precision_quality", "sampler_quality", "memory",
       "recipe_quality", "demo_e2e", "generate_threads", "latent_cost", "latent_3d", "latent_2d",
       "judge_validity", "judge_cost", "demo_power", "clip", "reports", "img2img", "bf16_crossover"]
# Not in ALL (hours on a CPU): utility, refine_effect (python -m benchmarks NAME).
# These share one trained demo model (fp32, examples/derm-demo.yaml) through a common --workdir.
SHARED = {"precision_quality", "sampler_quality", "memory"}
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
MARK = "<!-- generated below by `python -m benchmarks`; edit above this line -->"


def _flat(d: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(d, dict):
        out: list[tuple[str, object]] = []
        for k, v in d.items():
            out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        out = []
        for i, x in enumerate(d):
            out += _flat(x, f"{prefix}[{i}]")
        return out
    return [(prefix, d)]


def write_report() -> None:
    head = DOC.read_text().split(MARK)[0].rstrip() if DOC.exists() else "# Benchmarks"
    parts = [head, "", MARK, ""]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        m = data.get("machine", {})
        results = data.get("results", {})
        table = results.get("markdown") if isinstance(results, dict) else None
        parts += [f"## {data.get('benchmark', path.stem)}", "",
                  f"{data.get('date', '?')}{' · commit ' + data['commit'] if data.get('commit') else ''}"
                  f" · {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                  f"{m.get('memory_gb', '?')} GB · torch {m.get('torch', '?')} · GPU: {m.get('gpu') or 'none'}",
                  ""]
        if isinstance(table, str):  # a benchmark that writes its own table (utility)
            parts += [table, ""]
            continue
        parts += ["| metric | value |", "| --- | --- |"]
        for k, v in _flat(results):
            if isinstance(v, float):
                v = f"{v:.4g}"
            parts.append(f"| {k} | {v} |")
        parts.append("")
    DOC.write_text("\n".join(parts) + "\n")
    print(f"wrote {DOC}")


def main(argv: list[str]) -> int:
    if "--report-only" in argv:
        write_report()
        return 0
    names = [a for a in argv if not a.startswith("-")] or ALL
    failed = []
    shared = tempfile.TemporaryDirectory(prefix="medsynth-bench-")
    for name in names:
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError:
            print(f"[bench] {name}: not available, skipped")
            continue
        print(f"[bench] {name}")
        try:
            if name in SHARED:
                mod.main(["--workdir", shared.name])
            else:
                mod.main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
    shared.cleanup()
    write_report()
    if failed:
        print(f"[bench] failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
