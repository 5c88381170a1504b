"""What judging costs per backend, through ``run_judge`` (the command's code path).

    python -m benchmarks judge_cost           # writes benchmarks/results/judge_cost.json

One synthetic set of derm phantoms (64 px, 8 per class) is judged against the shipped derm
criteria by:

* ``measure`` (offline pixel measurers), one process;
* ``transformers`` with a tiny random LLaVA built on the spot (tests/describe/tiny_vlm.py):
  one forward pass per yes/no question, 1 + 6 or 7 questions per image;
* ``openai`` over loopback against ``transformers serve`` with the same tiny model (real HTTP,
  images as data URLs, 32-token answers, no re-asks: the random model's answers are invalid
  and recorded as failed, the cost of one request per image is what is measured);
* ``openai`` against the scripted loopback server (tests/scripted_openai.py) answering valid
  verdicts at once: the client's own overhead (request building, PNG data URL, validation,
  records), one request at a time (the script answers in order).

The tiny model's numbers are the pipeline's overhead on this CPU, not what a real 4-7B VLM
costs (that is dominated by the model: seconds per image on a GPU server).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

N_PER_CLASS = 8


def _timed(cfg: Any) -> dict[str, Any]:
    import resource

    from medsynth.judging.judged import run_judge

    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    r0 = [resource.getrusage(w) for w in who]
    t0 = time.perf_counter()
    s = run_judge(cfg)
    wall = time.perf_counter() - t0
    r1 = [resource.getrusage(w) for w in who]
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(r0, r1,
                                                                               strict=True))
    n = s.judged + s.failed
    return {"images": n, "ok": s.judged, "failed": s.failed, "errors": s.errors,
            "loop_s": round(s.seconds, 2), "wall_s_with_setup": round(wall, 2),
            "images_per_s": round(s.rate, 2), "s_per_image": round(s.seconds / max(n, 1), 3),
            "cpu_s_per_image": round(cpu / max(n, 1), 3)}


def _serve(model: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None:
        raise RuntimeError("the `transformers` CLI is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "wb") as f:
        proc = subprocess.Popen([exe, "serve", str(model), "--host", "127.0.0.1", "--port",
                                 str(port)], stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited: {log.read_text()[-1000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, f"{base}/v1"
        except OSError:
            time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    raise RuntimeError("transformers serve did not become healthy")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.common import record
    from medsynth.judging.criteria import load_criteria
    from medsynth.judging.judged import JudgeConfig
    from medsynth.judging.judges import JudgeSettings
    from tests.describe.tiny_vlm import build_tiny_llava
    from tests.judge.conftest import make_phantom_set
    from tests.scripted_openai import serve

    os.environ.setdefault("MEDSYNTH_NO_PROGRESS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = tempfile.TemporaryDirectory(prefix="judge-cost-")
    root = Path(tmp.name)
    synth = make_phantom_set(root / "set", "derm", N_PER_CLASS)
    model = build_tiny_llava(root / "tiny-llava")
    out: dict[str, Any] = {"images": 3 * N_PER_CLASS, "size": 64,
                           "load_average_1min_start": round(os.getloadavg()[0], 2)}

    def cfg(name: str, **settings: Any) -> JudgeConfig:
        return JudgeConfig(synth=str(synth), criteria="derm", out=str(root / name),
                           settings=JudgeSettings(**settings))

    out["measure"] = _timed(cfg("measure", backend="measure", concurrency=1))
    out["transformers_tiny"] = _timed(cfg("tf", backend="transformers", model=str(model),
                                          concurrency=8))
    proc, url = _serve(model, root / "serve.log")
    try:
        out["openai_transformers_serve_tiny"] = _timed(cfg(
            "serve", backend="openai", model=str(model), base_url=url, max_new_tokens=32,
            max_reasks=0, concurrency=2, timeout=120))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
    crit = load_criteria("derm")
    with serve() as state:
        answers = {c: json.dumps({"image_valid": True, "criteria": {
            i: {"verdict": "met", "confidence": 0.9, "rationale": "ok"} for i in cc.ids}})
            for c, cc in crit.classes.items()}
        # one valid answer per class, in the set's class order (requests go in samples order)
        state.script = [("ok", answers[c]) for c in crit.classes for _ in range(N_PER_CLASS)]
        out["openai_scripted_overhead"] = _timed(cfg(
            "scripted", backend="openai", model="scripted", base_url=state.url, concurrency=1,
            max_reasks=0))
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    record("judge_cost", out)
    tmp.cleanup()
    return out


if __name__ == "__main__":
    main()
