"""The training batches' way to the device, and the recipe's ``prefetch`` lever.

Each micro-batch is drawn on the host from a generator seeded by its (step, micro-batch, process)
key (:meth:`medsynth.train.loop._Trainer._draw`), so it does not matter when or on which thread
it is drawn. Off (the default): drawn when needed, copied with a blocking ``.to(device)``. On: the
next micro-batch is drawn on a worker thread while the current one trains, into pinned
(page-locked) host memory on a CUDA device, and copied with ``non_blocking=True``, so the host's
batch building and the copy overlap the GPU's step. Same batches, same losses, either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from medsynth.train.launch import is_cuda


def _map_tensors(batch: Any, fn: Callable[[Any], Any]) -> Any:
    import torch

    return dataclasses.replace(batch, **{f.name: fn(v) for f in dataclasses.fields(batch)
                                         if torch.is_tensor(v := getattr(batch, f.name))})


def pin(batch: Any) -> Any:
    """``batch`` with its tensors in pinned host memory; unchanged where torch cannot pin (a
    CPU-only build or no accelerator: pinning only helps copies to a GPU)."""
    try:
        return _map_tensors(batch, lambda t: t.pin_memory())
    except RuntimeError:
        return batch


def to_device(batch: Any, device: Any, *, non_blocking: bool = False) -> Any:
    return _map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


class BatchStream:
    """Micro-batches ``draw(step, micro)`` on ``device``, asked for in the order of ``keys``;
    with ``prefetch`` one is drawn ahead on a worker thread (pinned when the device is CUDA)."""

    def __init__(self, draw: Callable[[int, int], Any], keys: Iterable[tuple[int, int]],
                 device: Any, *, prefetch: bool = False) -> None:
        self.draw, self.device, self.prefetch = draw, device, bool(prefetch)
        self.pinned = self.prefetch and is_cuda(device)
        self._keys = iter(keys)
        self._pool = ThreadPoolExecutor(1, "medsynth-batches") if self.prefetch else None
        self._next: tuple[tuple[int, int], Future[Any]] | None = None
        self._submit()

    def _host(self, step: int, micro: int) -> Any:
        batch = self.draw(step, micro)
        return pin(batch) if self.pinned else batch

    def _submit(self) -> None:
        pool = self._pool
        key = next(self._keys, None) if pool is not None else None
        self._next = None if key is None or pool is None else (key, pool.submit(self._host, *key))

    def get(self, step: int, micro: int) -> Any:
        """Micro-batch ``micro`` of ``step`` on the device."""
        if self._next is None:
            return to_device(self.draw(step, micro), self.device)
        key, fut = self._next
        if key != (step, micro):
            raise RuntimeError(f"batch {(step, micro)} asked for, {key} drawn ahead")
        batch = fut.result()
        self._submit()
        return to_device(batch, self.device, non_blocking=self.pinned)

    def close(self) -> None:
        """Stop drawing ahead (a drawn batch is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._next = None
