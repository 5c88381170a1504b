"""kill -9 of `medsynth judge` takes its measuring worker processes with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medsynth.synthset import write_samples
from tests.judge.conftest import make_phantom_set

psutil = pytest.importorskip("psutil")


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.mark.skipif(os.name != "posix", reason="kill -9 is POSIX")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the measure judge uses one process here")
def test_kill_9_of_judge_ends_its_workers(tmp_path: Path) -> None:
    synth = make_phantom_set(tmp_path, "derm", 2)
    # many rows on the same few files: a run long enough to be killed while it measures
    import pandas as pd

    base = pd.read_csv(synth / "samples.csv").to_dict("records")
    rows = [{**r, "sample_id": f"{r['sample_id']}-{k:04d}"} for k in range(400) for r in base]
    write_samples(synth, rows)
    from medsynth.artifacts import input_ref, read_manifest, write_manifest

    m = read_manifest(synth)
    write_manifest(synth, "generate", config={**m.config, "n_rows": len(rows)},
                   inputs=[input_ref(tmp_path / "model", "train")], outputs=m.outputs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from medsynth.cli import main; main()", "judge", str(synth),
         "--criteria", "derm", "--out", str(tmp_path / "judged"), "--concurrency", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    parent = psutil.Process(proc.pid)
    workers: list = []
    try:
        assert _wait(lambda: len(parent.children(recursive=True)) >= 2 or
                     proc.poll() is not None, 120), "no worker processes started"
        assert proc.poll() is None, "the judge finished before it could be killed"
        workers = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)

        def gone() -> bool:
            return not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE
                           for w in workers)

        assert _wait(gone, 60), [w.pid for w in workers if w.is_running()]
    finally:  # leave nothing behind, whatever happened
        for w in workers:
            if w.is_running():
                w.kill()
        if proc.poll() is None:
            proc.kill()
