"""`make demo` end to end: wall time of each stage of scripts/demo.sh on a fresh output folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import record

ROOT = Path(__file__).resolve().parent.parent


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(sys.executable).parent / "medsynth"
        r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(Path(tmp) / "demo")],
                           cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "MEDSYNTH": str(exe)})
    if r.returncode != 0:
        raise RuntimeError(f"demo failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("[demo-timing]"))
    times = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    total = times.pop("total")
    res = {"total_s": total, "target_s": 900, "stages_s": times,
           "share": {k: round(v / max(total, 1), 3) for k, v in times.items()}}
    record("demo_e2e", res)
    return res


if __name__ == "__main__":
    main()
