"""Prometheus metrics of the server (``GET /metrics``, text exposition format) via prometheus_client.

Each app gets its own ``CollectorRegistry`` (two apps in one process, as in tests, never share counters).

- ``polymodal_requests_total{route, status}``: requests answered;
- ``polymodal_request_latency_seconds{route}``: histogram of the time from the request's arrival to its answer;
- ``polymodal_batch_size{op}``: histogram of how many requests shared a forward pass;
- ``polymodal_batch_seconds{op}``: histogram of the forward-pass time of a batch;
- ``polymodal_queue_depth``: requests waiting for the batching worker, read at scrape time;
- ``polymodal_rejected_total{reason}``: requests refused by a limit (body, queue, timeout, input, auth);
- ``polymodal_generations_total{finish_reason}``: generations finished (stop, length, cancelled);
- ``polymodal_generated_tokens_total``: new tokens generated.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter("polymodal_requests", "Requests answered, by route and HTTP status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("polymodal_request_latency_seconds", "Request latency, arrival to answer",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("polymodal_batch_size", "Requests per forward pass", ["op"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("polymodal_batch_seconds", "Forward-pass time of one batch", ["op"],
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejected = Counter("polymodal_rejected", "Requests refused by a limit or check, by reason",
                                ["reason"], registry=self.registry)
        self.generations = Counter("polymodal_generations", "Generations finished, by finish reason",
                                   ["finish_reason"], registry=self.registry)
        self.generated_tokens = Counter("polymodal_generated_tokens", "New tokens generated", registry=self.registry)
        depth = Gauge("polymodal_queue_depth", "Requests waiting for the batching worker", registry=self.registry)
        depth.set_function(queue_depth)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, op: str, size: int, seconds: float) -> None:
        self.batch_size.labels(op=op).observe(size)
        self.batch_seconds.labels(op=op).observe(seconds)

    def observe_generation(self, finish_reason: str, tokens: int) -> None:
        self.generations.labels(finish_reason=finish_reason).inc()
        self.generated_tokens.inc(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["ServeMetrics"]
