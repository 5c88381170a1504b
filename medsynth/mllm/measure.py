"""The offline backend: answers come from pixel measurements, not from a model.

It takes a *measurer*: a picklable callable ``measurer(request) -> dict`` that looks at the
request's image (and ``request.context``) and returns the answer object, in the same schema a
model would fill. The backend turns it into JSON text, so the engine validates it like any other
answer. Each user supplies its own measurer (describe maps :mod:`medsynth.measure` results to a
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

            self._pool = cf.ProcessPoolExecutor(max_workers=self.processes)
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
