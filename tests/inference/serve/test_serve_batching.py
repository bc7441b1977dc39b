"""DynamicBatcher: grouping within the wait window, max_batch, one op per batch, queue limit, per-request errors,
cancelled requests skipped, close drains."""

from __future__ import annotations

import threading
import time

import pytest

from polymodal.inference.serve.batching import BatcherClosedError, DynamicBatcher, QueueFullError


class Recorder:
    """A batch runner that records each batch; ``gate`` (an Event) holds the worker inside a batch."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[tuple[str, list]] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, op, payloads):
        self.batches.append((op, list(payloads)))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return [ValueError(f"bad {p}") if p == "bad" else (op, p) for p in payloads]


def test_requests_within_the_window_share_one_batch_in_arrival_order():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch=8, max_wait_ms=300)
    futures = [batcher.submit("predict", i) for i in range(5)]
    results = [f.result(5) for f in futures]
    batcher.close()
    assert run.batches == [("predict", [0, 1, 2, 3, 4])]
    assert [r.value for r in results] == [("predict", i) for i in range(5)]
    assert {r.batch_size for r in results} == {5}


def test_a_full_batch_runs_at_once_without_waiting_for_the_window():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch=3, max_wait_ms=10_000)
    start = time.monotonic()
    futures = [batcher.submit("predict", i) for i in range(3)]
    assert [f.result(5).value[1] for f in futures] == [0, 1, 2]
    assert time.monotonic() - start < 5  # the 10 s window was not waited out
    batcher.close()


def test_batches_never_exceed_max_batch_and_never_mix_ops():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch=2, max_wait_ms=0)
    first = batcher.submit("predict", "x")
    assert run.entered.wait(5)  # the worker holds the first batch; the rest queue up behind it
    futures = [batcher.submit(op, i) for i, op in enumerate(["embed", "predict", "embed", "predict", "embed"])]
    assert batcher.depth == 5
    gate.set()
    for future in [first, *futures]:
        future.result(5)
    batcher.close()
    sizes = [len(p) for _, p in run.batches]
    assert max(sizes) <= 2 and sum(sizes) == 6
    assert all(len({op}) == 1 for op, _ in run.batches)
    assert run.batches[1] == ("embed", [0, 2])  # the oldest request's op first, then the same op in order


def test_max_batch_one_runs_every_request_alone():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch=1, max_wait_ms=50)
    futures = [batcher.submit("predict", i) for i in range(4)]
    assert [f.result(5).batch_size for f in futures] == [1, 1, 1, 1]
    batcher.close()
    assert [p for _, p in run.batches] == [[0], [1], [2], [3]]


def test_an_error_goes_to_its_own_request_only():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch=4, max_wait_ms=200)
    futures = [batcher.submit("predict", p) for p in ("a", "bad", "c")]
    assert futures[0].result(5).value == ("predict", "a")
    with pytest.raises(ValueError, match="bad bad"):
        futures[1].result(5)
    assert futures[2].result(5).value == ("predict", "c")
    batcher.close()


def test_a_runner_that_crashes_fails_its_batch_and_the_worker_survives():
    calls = []

    def run(op, payloads):
        calls.append(payloads)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return payloads

    batcher = DynamicBatcher(run, max_batch=4, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit("predict", 1).result(5)
    assert batcher.submit("predict", 2).result(5).value == 2  # the worker thread is still alive
    batcher.close()


def test_queue_full_is_refused_at_submit():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch=1, max_wait_ms=0, max_queue=2)
    running = batcher.submit("predict", 0)
    assert run.entered.wait(5)
    waiting = [batcher.submit("predict", 1), batcher.submit("predict", 2)]
    with pytest.raises(QueueFullError, match="max_queue=2"):
        batcher.submit("predict", 3)
    gate.set()
    assert [f.result(5).value[1] for f in [running, *waiting]] == [0, 1, 2]
    batcher.close()


def test_a_cancelled_request_is_dropped_before_its_batch_runs():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch=4, max_wait_ms=0)
    batcher.submit("predict", "first")
    assert run.entered.wait(5)
    gone, kept = batcher.submit("predict", "gone"), batcher.submit("predict", "kept")
    assert gone.cancel()  # the caller timed out while it waited
    gate.set()
    assert kept.result(5).value == ("predict", "kept")
    batcher.close()
    assert all("gone" not in payloads for _, payloads in run.batches)


def test_close_finishes_waiting_requests_then_refuses_new_ones():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch=4, max_wait_ms=10_000)
    future = batcher.submit("predict", 1)
    batcher.close()  # does not wait out the 10 s window
    assert future.result(1).value == ("predict", 1)
    with pytest.raises(BatcherClosedError):
        batcher.submit("predict", 2)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(Recorder(), max_batch=0)


def test_a_lone_request_does_not_wait_when_nothing_is_on_its_way():
    run = Recorder()
    on_the_way = {"count": 0}
    batcher = DynamicBatcher(run, max_batch=8, max_wait_ms=10_000, incoming=lambda: on_the_way["count"])
    start = time.monotonic()
    assert batcher.submit("predict", 1).result(5).batch_size == 1
    assert time.monotonic() - start < 5  # not the 10 s window


def test_the_window_waits_for_requests_on_their_way():
    run = Recorder()
    on_the_way = {"count": 1}  # a request is being read and checked
    batcher = DynamicBatcher(run, max_batch=8, max_wait_ms=10_000, incoming=lambda: on_the_way["count"])
    first = batcher.submit("predict", 1)
    time.sleep(0.2)
    assert not first.done()  # still waiting for the one on its way
    on_the_way["count"] = 0
    second = batcher.submit("predict", 2)  # it arrives: the batch is complete
    assert first.result(5).batch_size == second.result(5).batch_size == 2
    batcher.close()


def test_a_refused_request_on_its_way_releases_the_wait():
    run = Recorder()
    on_the_way = {"count": 1}
    batcher = DynamicBatcher(run, max_batch=8, max_wait_ms=10_000, incoming=lambda: on_the_way["count"])
    first = batcher.submit("predict", 1)
    time.sleep(0.1)
    on_the_way["count"] = 0  # the other request failed its checks (422): it will never come
    batcher.notify()
    assert first.result(5).batch_size == 1
    batcher.close()
