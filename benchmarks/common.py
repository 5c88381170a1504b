"""What every benchmark shares: machine facts, result recording, the machine's matmul peaks."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
                            "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    for mod in ("diffusers", "transformers", "medsynth"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def record(name: str, results: dict[str, Any]) -> Path:
    """Write benchmarks/results/NAME.json with the machine and date, print it, return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "commit": git_rev(), "machine": machine(), "results": results}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["results"], indent=2))
    return path


def matmul_peak(dtype: str = "float32", n: int = 1024, seconds: float = 2.0) -> float:
    """Achieved GFLOP/s of an n x n matmul on this machine (the practical compute ceiling)."""
    import torch

    dt_ = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt_), torch.randn(n, n, dtype=dt_)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "?"


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_cli(args: list[str], log: Path, threads: int | None = None, *,
            trace_rss: bool = False) -> dict[str, Any]:
    """Run ``medsynth ARGS`` as a user would; return its wall time and peak RSS (that process).

    Output goes to LOG (appended). Raises with the log's path if the command fails. With
    ``trace_rss`` the RSS is also sampled every 0.2 s from /proc: the mean per quarter of the
    run shows whether memory grows with the work or stays flat.
    """
    import sys

    exe = str(Path(sys.executable).parent / "medsynth")
    env = {**os.environ, "MEDSYNTH_NO_PROGRESS": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    samples: list[float] = []
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ medsynth {' '.join(args)}\n")
        f.flush()
        p = subprocess.Popen([exe, *args], stdout=f, stderr=subprocess.STDOUT, env=env,
                             cwd=Path(__file__).resolve().parent.parent)
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG if trace_rss else 0)
            if pid:
                break
            r = _rss_mb(p.pid)
            if r:
                samples.append(r)
            time.sleep(0.2)
    p.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"medsynth {args[0]} failed ({code}); see {log}")
    out: dict[str, Any] = {"wall_s": round(time.perf_counter() - t0, 1),
                           "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
                           "peak_rss_mb": round(ru.ru_maxrss / 1024)}
    if trace_rss:
        q = max(1, len(samples) // 4)
        out["mean_rss_mb_by_quarter"] = [round(sum(c) / len(c)) for c in
                                         (samples[i * q:(i + 1) * q] for i in range(4)) if c]
    return out


def side_by_side(fn: Any, keys: list[str]) -> dict[str, Any]:
    """``{k: fn(k)}`` with every call in its own thread (each runs subprocesses); all errors raised."""
    import threading

    res: dict[str, Any] = {}
    errors: list[str] = []

    def work(k: str) -> None:
        try:
            res[k] = fn(k)
        except Exception as e:  # noqa: BLE001 - reported below, the others go on
            errors.append(f"{k}: {e}")

    ts = [threading.Thread(target=work, args=(k,)) for k in keys]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return res


def fidelity_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline fidelity figures of an evaluate metrics.json (first synthetic set)."""
    fid = metrics["fidelity"]
    s = next(iter(fid["sets"].values()))["overall"]
    ref = fid["reference"]["overall"]
    return {"fid": s["fid"], "fid_real_vs_real": ref["fid"], "kid": s["kid"],
            "kid_real_vs_real": ref["kid"], "precision": s["precision"],
            "precision_real": ref["precision"], "coverage": s.get("coverage"),
            "coverage_real": ref.get("coverage")}


def demo_data(root: Path, *, size: int = 32, n_per_class: int = 200) -> tuple[Path, Path]:
    """Derm phantoms and their descriptions (train split) under ROOT, made once and reused."""
    root.mkdir(parents=True, exist_ok=True)
    data, store = root / "data", root / "store"
    if not (data / "medsynth.json").exists():
        run_cli(["data", "demo", "derm", "--out", str(data), "--n-per-class", str(n_per_class),
                 "--size", str(size), "--seed", "0"], root / "log.txt")
    if not (store / "medsynth.json").exists():
        run_cli(["describe", str(data), "--out", str(store), "--split", "train"], root / "log.txt")
    return data, store


def demo_model(root: Path, *, mixed_precision: str = "no", threads: int = 2,
               recipe: str = "examples/derm-demo.yaml") -> dict[str, Any]:
    """A model trained with RECIPE on :func:`demo_data` under ROOT/model-PRECISION (reused).

    Returns the paths and, when it trained, the train stage's wall time and peak RSS.
    """
    import yaml

    repo = Path(__file__).resolve().parent.parent
    size = int(yaml.safe_load((repo / recipe).read_text())["size"])
    data, store = demo_data(root, size=size)
    model = root / f"model-{mixed_precision}"
    out: dict[str, Any] = {"data": data, "store": store, "model": model}
    if not (model / "unet").exists():
        resume = ["--resume"] if (model / "checkpoints").exists() else []
        out["train"] = run_cli(["train", str(data), "--store", str(store), "--out", str(model),
                                "--config", str(repo / recipe), "--threads", str(threads),
                                "--mixed-precision", mixed_precision, *resume],
                               root / f"log-{mixed_precision}.txt", threads)
    return out
