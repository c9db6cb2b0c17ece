"""The server's Prometheus metrics (prometheus-client), in a registry of its own: requests by
endpoint and status, their latency, records by outcome, round sizes and the queue's depth."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROUND_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    def __init__(self, queue_depth: Callable[[], int]):
        self.registry = CollectorRegistry()
        self.requests = Counter("composer_serve_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("composer_serve_request_seconds", "Time from a request's arrival to its answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.records = Counter("composer_serve_records", "Records answered, by outcome (ok, failed, timeout)",
                               ["outcome"], registry=self.registry)
        self.batch_size = Histogram("composer_serve_batch_records", "Records per round run through the stages",
                                    buckets=ROUND_BUCKETS, registry=self.registry)
        depth = Gauge("composer_serve_queue_depth", "Records waiting for a round", registry=self.registry)
        depth.set_function(queue_depth)
        self.by_status: Tally[str] = Tally()  # for the run folder's manifest


    def answered(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        self.by_status[str(status)] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
