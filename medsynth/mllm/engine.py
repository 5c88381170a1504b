"""Ask, validate, re-ask: the loop every user of a model runs, the same for every backend.

For each item the caller builds a :class:`~medsynth.mllm.request.Request`; the backend answers;
the caller's check validates the raw answer; an invalid answer goes back to the model with its
problems (the model sees its own answer) at most ``max_reasks`` times. Every raw answer is kept
in the :class:`Outcome`, valid or not. Three endings per item:

* ``ok``: a valid answer (``value`` is what the check kept);
* ``failed``: still invalid after the re-asks (``problems`` of the last answer, all ``answers``);
* ``error``: a request failed for good (``error``); callers record nothing, so a resumed run
  asks again.

Concurrency follows the backend's declaration: items go out in batches of ``batch_size``, with
``workers`` batches in flight (threads); outcomes come back in completion order. When
``max_consecutive_errors`` requests in a row fail, the server is taken to be down and
:class:`~medsynth.mllm.backend.BackendUnavailable` stops the run (what finished is kept by the
caller), instead of grinding through every remaining item's retries.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
from collections.abc import Callable, Generator, Iterable
from typing import Any, Generic, TypeVar

from medsynth.mllm.backend import Backend, BackendUnavailable, RequestError
from medsynth.mllm.request import Request
from medsynth.mllm.validate import Checked

T = TypeVar("T")
Check = Callable[[str, Any], Checked]
REASK_SEPARATOR = "\n\n--- re-asked ---\n\n"
"""Joins the raw answers of one item when they are stored as one text."""


@dataclasses.dataclass
class Outcome(Generic[T]):
    """What became of one item."""

    item: T
    status: str
    """``ok`` | ``failed`` | ``error``."""
    value: Any = None
    """The check's value of the valid answer (``ok``)."""
    answers: list[str] = dataclasses.field(default_factory=list)
    """Every raw answer, in order (re-asks included)."""
    problems: list[str] = dataclasses.field(default_factory=list)
    """Problems of the last answer (``failed``)."""
    error: str = ""
    """Why the request failed (``error``)."""

    @property
    def raw(self) -> str:
        """All raw answers as one text."""
        return REASK_SEPARATOR.join(self.answers)


class Engine:
    """Runs requests through one backend with validation and bounded re-asks."""

    def __init__(self, backend: Backend, *, max_reasks: int = 2,
                 max_consecutive_errors: int | None = None) -> None:
        """
        Args:
            backend: any :class:`~medsynth.mllm.backend.Backend`.
            max_reasks: re-asks of an invalid answer (none for backends that cannot revise).
            max_consecutive_errors: failed requests in a row that stop the run (0 = never;
                None = 8, or twice the requests in flight when that is more).
        """
        if not isinstance(backend, Backend):
            raise TypeError(f"{type(backend).__name__} does not implement the Backend protocol")
        self.backend = backend
        self.max_reasks = max_reasks if backend.can_revise else 0
        if max_consecutive_errors is None:
            max_consecutive_errors = max(8, 2 * int(backend.workers) * int(backend.batch_size))
        self.max_consecutive_errors = max_consecutive_errors

    def ask(self, request: Request, check: Check, item: Any = None) -> Outcome[Any]:
        """One request, answered in this thread."""
        return self._ask_batch([item], lambda _: request, check)[0]

    def run(self, items: Iterable[T], build: Callable[[T], Request], check: Check
            ) -> Generator[Outcome[T], None, None]:
        """Outcomes of every item, in completion order (close() stops it early).

        Args:
            items: what to ask about (consumed lazily, a batch at a time).
            build: item -> request; called in a worker thread (it may load the image).
            check: (raw answer, item) -> :class:`~medsynth.mllm.validate.Checked`.

        Raises:
            BackendUnavailable: ``max_consecutive_errors`` requests in a row failed.
        """
        size, workers = max(1, int(self.backend.batch_size)), max(1, int(self.backend.workers))
        it = iter(items)
        pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mllm")
        pending: set[cf.Future[list[Outcome[T]]]] = set()
        in_a_row, last_error = 0, ""
        try:
            while True:
                while len(pending) < workers:
                    batch = list(itertools.islice(it, size))
                    if not batch:
                        break
                    pending.add(pool.submit(self._ask_batch, batch, build, check))
                if not pending:
                    return
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    for outcome in fut.result():
                        if outcome.status == "error":
                            in_a_row, last_error = in_a_row + 1, outcome.error
                        else:
                            in_a_row = 0
                        yield outcome
                    if self.max_consecutive_errors and in_a_row >= self.max_consecutive_errors:
                        raise BackendUnavailable(
                            f"{self.backend.name} ({self.backend.model}): {in_a_row} requests "
                            f"in a row failed; stopping. Last error: {last_error}",
                            hint="check that the server is up and reachable; finished work is "
                                 "kept, rerun with --resume to continue")
        finally:
            for fut in pending:
                fut.cancel()
            # Do not wait for requests still in flight (they may be retrying for minutes).
            pool.shutdown(wait=False, cancel_futures=True)

    def _ask_batch(self, items: list[T], build: Callable[[T], Request], check: Check
                   ) -> list[Outcome[T]]:
        """Ask a batch; re-ask its invalid answers together, round by round."""
        outcomes: list[Outcome[T] | None] = [None] * len(items)
        requests: dict[int, Request] = {}
        for i, item in enumerate(items):
            try:
                requests[i] = build(item)
            except RequestError as e:
                outcomes[i] = Outcome(item, "error", error=str(e))
        answers: dict[int, list[str]] = {i: [] for i in requests}
        problems: dict[int, list[str]] = {}
        open_ = list(requests)
        for round_ in range(self.max_reasks + 1):
            if not open_:
                break
            try:
                raws = self.backend.answer([requests[i] for i in open_])
            except RequestError as e:
                raws = [e] * len(open_)
            if len(raws) != len(open_):
                raise RuntimeError(f"{self.backend.name}: {len(raws)} answers to "
                                   f"{len(open_)} requests")
            still = []
            for i, raw in zip(open_, raws, strict=True):
                if isinstance(raw, RequestError):
                    outcomes[i] = Outcome(items[i], "error", answers=answers[i], error=str(raw))
                    continue
                answers[i].append(raw)
                verdict = check(raw, items[i])
                if verdict.ok:
                    outcomes[i] = Outcome(items[i], "ok", value=verdict.value, answers=answers[i])
                    continue
                problems[i] = verdict.problems
                if round_ < self.max_reasks:
                    requests[i].reask(raw, verdict.problems)
                still.append(i)
            open_ = still
        for i in open_:
            outcomes[i] = Outcome(items[i], "failed", answers=answers[i], problems=problems[i])
        return [o for o in outcomes if o is not None]
