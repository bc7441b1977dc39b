"""Dynamic batching: requests that arrive close together share one forward pass on one worker thread.

The first request to wait opens a window of ``max_wait_ms``; requests of the same kind (``op``: predict or
embed) that arrive within it join the batch until it holds ``max_batch``; then the worker runs the whole batch
as ONE call of ``run(op, payloads)``. This is the scheme of NVIDIA Triton's dynamic batcher
(``max_queue_delay_microseconds``, ``preferred_batch_size``) and TorchServe's ``batch_size`` / ``max_batch_delay``.
``max_batch=1`` turns batching off (every request runs alone, none waits). ``op_max_batch`` lowers the size for
some ops: text generation (op ``generate``) runs one request at a time, since its requests differ in decoding
options and length and a batch would hold every answer until the longest is done.

One refinement over a fixed window: given ``incoming()`` (how many requests the server has admitted that are
still being read and checked, i.e. on their way to the queue), the worker stops waiting as soon as none is on
its way, since nothing could join the batch. A lone client therefore pays no ``max_wait_ms`` per request, while
concurrent clients still share forward passes.

``run`` returns one result per payload, in order; an entry may be an exception, which goes to that request only.
At most ``max_queue`` requests wait at once: one more raises :class:`QueueFullError` at ``submit`` (the server's
503), so an overloaded server sheds load instead of growing an unbounded backlog. A request whose caller gave
up (its future cancelled, e.g. a timeout) is dropped before its batch runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ...errors import PolymodalError

log = logging.getLogger("polymodal.serve")


class QueueFullError(PolymodalError):
    """``max_queue`` requests are already waiting."""


class BatcherClosedError(PolymodalError):
    """The batcher is shutting down and takes no new requests."""


@dataclass
class BatchResult:
    value: Any
    batch_size: int  # how many requests shared the forward pass that produced ``value``


@dataclass
class _Item:
    op: str
    payload: Any
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """``submit(op, payload) -> Future[BatchResult]``; a daemon worker thread runs the batches.

    ``run(op, payloads) -> list[result | Exception]`` is called on the worker thread only, so the model is never
    used by two threads at once. ``on_batch(op, size, seconds)`` is told about every batch (metrics).
    """

    def __init__(self, run: Callable[[str, list[Any]], list[Any]], max_batch: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 256, on_batch: Callable[[str, int, float], None] | None = None,
                 incoming: Callable[[], int] | None = None, op_max_batch: dict[str, int] | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be >= 1, "
                             f"max_wait_ms ({max_wait_ms}) >= 0")
        self._run = run
        self.max_batch = max_batch
        self.op_max_batch = dict(op_max_batch or {})
        if any(size < 1 for size in self.op_max_batch.values()):
            raise ValueError(f"op_max_batch sizes must be >= 1, got {self.op_max_batch}")
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._incoming = incoming
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="polymodal-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (not counting the batch running now)."""
        return len(self._queue)

    def notify(self) -> None:
        """Wake the worker to re-check ``incoming()`` (a request on its way was refused before the queue)."""
        with self._cond:
            self._cond.notify_all()

    def submit(self, op: str, payload: Any) -> Future:
        item = _Item(op, payload)
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the server is shutting down; retry on another instance")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"{len(self._queue)} requests are already waiting (max_queue={self.max_queue})")
            self._queue.append(item)
            self._cond.notify()
        return item.future

    def close(self, timeout: float | None = 10.0) -> None:
        """Take no new requests, finish the waiting ones, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------ worker

    def _limit(self, op: str) -> int:
        return min(self.max_batch, self.op_max_batch.get(op, self.max_batch))

    def _count(self, op: str) -> int:
        return sum(1 for item in self._queue if item.op == op)

    def _take(self) -> list[_Item] | None:
        """Block until a batch is due; remove and return it (None: closed and drained)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = first.enqueued + self.max_wait
            limit = self._limit(first.op)
            while not self._closed and self._count(first.op) < limit:
                if self._incoming is not None and self._incoming() <= 0:
                    break  # no request is on its way: waiting could only add latency
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, kept = [], deque()
            for item in self._queue:  # same op, arrival order; other ops stay queued for the next batch
                (batch if item.op == first.op and len(batch) < limit else kept).append(item)
            self._queue = kept
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            # a caller that gave up (timeout) cancelled its future: skip it; the rest can no longer be cancelled
            batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            op = batch[0].op
            start = time.perf_counter()
            try:
                results = self._run(op, [item.payload for item in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch runner returned {len(results)} results for {len(batch)} requests")
            except BaseException as err:  # noqa: BLE001 - the worker must survive anything a batch raises
                log.exception("batch of %d %s requests failed", len(batch), op)
                results = [err] * len(batch)
            elapsed = time.perf_counter() - start
            for item, result in zip(batch, results):
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(BatchResult(result, len(batch)))
            if self._on_batch is not None:
                try:
                    self._on_batch(op, len(batch), elapsed)
                except Exception:  # noqa: BLE001 - metrics never stop the worker
                    log.exception("batch metrics callback failed")


__all__ = ["BatchResult", "BatcherClosedError", "DynamicBatcher", "QueueFullError"]
