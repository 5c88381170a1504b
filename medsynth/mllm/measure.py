"""The offline backend: answers come from pixel measurements, not from a model.

It takes a *measurer*: a picklable callable ``measurer(request) -> dict`` that looks at the
request's image (and ``request.context``) and returns the answer object, in the same schema a
model would fill. The backend turns it into JSON text, so the engine validates it like any other
answer. Each user supplies its own measurer (describe maps :mod:`medsynth.pixel_attributes` results to a
template's attributes; a judge maps them to criteria), so nothing here knows about derm or cxr.

Measurements are deterministic and write no free text (``can_revise`` and ``writes_text`` are
False). With ``processes > 1`` batches run in a process pool, one batch per engine worker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from medsynth import __version__
from medsynth.mllm.backend import RequestError
from medsynth.mllm.request import Request

Measurer = Callable[[Request], dict[str, Any]]


def _measure_one(job: tuple[Measurer, Request]) -> str:
    measurer, req = job
    return json.dumps(measurer(req), default=_plain)


def _noop(i: int) -> int:
    return i


def die_with_parent(parent_pid: int, from_main_thread: bool = True) -> None:
    """Worker initializer: end this process when its parent dies (a ``kill -9`` of the parent
    runs no cleanup, and pool workers would otherwise live on, orphaned). A daemon thread
    watches the parent pid (any OS); on Linux the kernel also sends SIGKILL at the parent's
    death (PR_SET_PDEATHSIG), at once, when the pool was started from the parent's main thread
    (the signal follows the forking thread, which must live as long as the process)."""
    import os
    import sys
    import time

    if from_main_thread and sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the watchdog below still does it

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent_pid:  # died before the watch began
        os._exit(1)
    threading.Thread(target=watch, name="medsynth-parent-watch", daemon=True).start()


def _plain(v: Any) -> Any:
    """numpy scalars and tuples in a measurement to JSON types."""
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (tuple, set)):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


class MeasureBackend:
    """Answers each request with ``measurer(request)`` as JSON."""

    writes_text = False
    can_revise = False

    def __init__(self, measurer: Measurer, *, name: str = "measure", model: str | None = None,
                 processes: int = 1, batch_size: int = 16) -> None:
        self.measurer = measurer
        self.name = name
        self.model = model or f"medsynth.measure/{__version__}"
        self.processes = max(1, processes)
        self.workers = self.processes
        self.batch_size = max(1, batch_size)
        self._pool: Any = None
        self._lock = threading.Lock()  # engine workers call answer() from several threads
        if self.processes > 1:
            # Start the workers now, from the constructing (main) thread: forking later from an
            # engine thread while another one holds a lock (an import, a file) could leave the
            # child waiting on that lock forever.
            import concurrent.futures as cf
            import os

            self._pool = cf.ProcessPoolExecutor(max_workers=self.processes,
                                                initializer=die_with_parent,
                                                initargs=(os.getpid(), threading.current_thread()
                                                          is threading.main_thread()))
            list(self._pool.map(_noop, range(self.processes)))

    def info(self) -> dict[str, Any]:
        return {"processes": self.processes}

    def answer(self, requests: Sequence[Request]) -> list[str | RequestError]:
        jobs = [(self.measurer, r) for r in requests]
        with self._lock:
            pool = self._pool
        if pool is not None:
            return list(pool.map(_measure_one, jobs))
        return [_measure_one(j) for j in jobs]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(cancel_futures=True)
