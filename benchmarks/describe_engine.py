"""describe (offline attributes backend) through the shared MLLM engine: throughput, and
optionally the same against an older source tree, interleaved run by run on one dataset.

    python -m benchmarks describe_engine                          # this tree only
    python -m benchmarks.describe_engine --before /tmp/old-tree   # e.g. `git archive <rev>`

Each run is a fresh process (``describe --overwrite``, 2 workers) on 600 derm phantoms at 64 px
(seed 1); reported: wall-clock rate of the describing loop, CPU per image of the process and
its workers (start-up included), the load average. With ``--before``, the two trees alternate
so both see the same load, and the records of the last two runs are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
DATA = {"n_per_class": 200, "size": 64, "seed": 1}
_RUN = r"""
import json, os, resource, sys, time
code = sys.argv[1]
# Import medsynth from ``code``, not from the editable install's finder.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")
                    and "__editable__" not in getattr(type(f), "__module__", "")]
sys.path.insert(0, code)
os.environ["MEDSYNTH_NO_PROGRESS"] = "1"
import medsynth
assert medsynth.__file__.startswith(code), medsynth.__file__
from medsynth.describe.config import DescribeConfig
from medsynth.describe.run import run_describe
load = os.getloadavg()[0]
who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
r0 = [resource.getrusage(w) for w in who]
s = run_describe(DescribeConfig(dataset=sys.argv[2], out=sys.argv[3], overwrite=True,
                                concurrency=2, split="all"), progress=False)
r1 = [resource.getrusage(w) for w in who]
cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(r0, r1))
n = max(s.described + s.failed, 1)
print(json.dumps({"described": s.described, "failed": s.failed, "loop_s": round(s.seconds, 2),
                  "images_per_s": round(s.rate, 1), "cpu_ms_per_image": round(1000 * cpu / n, 2),
                  "load_average_1min": round(max(load, os.getloadavg()[0]), 2)}))
"""


def _once(code: Path, dataset: Path, store: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _RUN, str(code), str(dataset), str(store)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _records(store: Path) -> dict[str, tuple[Any, str]]:
    out = {}
    for f in store.glob("*/descriptions.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            out[r["image_id"]] = (r["attributes"], r["text"])
    return out


def run(before: Path | None = None, repeats: int = 3) -> dict[str, Any]:
    from medsynth.data.demo.common import DemoConfig, write_demo

    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "derm64"
        write_demo(DemoConfig(demo="derm", out=str(ds), **DATA))  # type: ignore[arg-type]
        trees = {"after": ROOT} | ({"before": before.resolve()} if before else {})
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
        for _ in range(repeats):
            for name, code in sorted(trees.items(), reverse=True):  # before first, then after
                runs[name].append(_once(code, ds, Path(tmp) / f"store_{name}"))
        res: dict[str, Any] = {"dataset": {**DATA, "n_images": 3 * DATA["n_per_class"]},
                               "workers": 2, "runs": runs}
        for name, rs in runs.items():
            res[name] = {"images_per_s": [r["images_per_s"] for r in rs],
                         "cpu_ms_per_image": [r["cpu_ms_per_image"] for r in rs],
                         "load_average_1min": [r["load_average_1min"] for r in rs]}
        if before:
            a, b = _records(Path(tmp) / "store_before"), _records(Path(tmp) / "store_after")
            changed = sorted(k for k in a if a[k] != b.get(k))
            res["records"] = {"n": len(a), "identical": len(a) - len(changed),
                              "changed": {k: {"before": a[k][1], "after": b[k][1]}
                                          for k in changed[:10]}}
    return res


def main() -> dict[str, Any]:
    from benchmarks.common import record

    res = run()
    record("describe_engine", res)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", type=Path, help="an older source tree (with medsynth/) to compare")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-record", action="store_true", help="print only, do not write results/")
    a = p.parse_args()
    os.environ.setdefault("MEDSYNTH_NO_PROGRESS", "1")
    result = run(a.before, a.repeats)
    if a.no_record:
        print(json.dumps(result, indent=2))
    else:
        from benchmarks.common import record

        record("describe_engine", result)
