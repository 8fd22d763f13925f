"""Prometheus metrics in a per-app registry: requests, latency, batching, queue, model identity.

Counts are per process: the service runs one uvicorn worker per container and scales by replicas,
so every scrape sees the whole of one replica. With ``MADE_WORKERS`` > 1 a scrape reaches one
worker at random and sees only that worker's counts; ``made_process_info`` says which.
"""

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from service.inference.batcher import BatchStats
from service.inference.state import ServingState

# Requests here take from well under a millisecond (a cached likelihood) to seconds (sampling).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
QUEUE_WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})


def batch_size_buckets(max_batch_size: int) -> tuple[float, ...]:
    """Powers of two up to the largest batch the batcher may form."""
    buckets, size = [], 1
    while size < max_batch_size:
        buckets.append(float(size))
        size *= 2
    return (*buckets, float(max_batch_size))


def method_label(method: str) -> str:
    """Clients choose the method string: bound the label's values."""
    return method if method in METHODS else "OTHER"


class ServingStateCollector(Collector):
    """Reads the served model and the batch queue at scrape time, so a reload shows at once."""

    def __init__(self, state: ServingState):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        loaded = [m for versions in self.state.models.values() for m in versions.values()]
        queued = GaugeMetricFamily(
            "made_batch_queue_rows",
            "Rows waiting in a model's batch queue (the queue depth).",
            labels=["model", "version"],
        )
        for model in loaded:
            batcher = self.state.batchers.get(model.engine)
            queued.add_metric([model.name, model.version], batcher.queued_rows if batcher else 0)
        yield queued
        process = InfoMetricFamily(
            "made_process",
            "This process; metrics are per process (one uvicorn worker per container).",
        )
        process.add_metric(
            [], {"pid": str(os.getpid()), "workers": str(self.state.settings.workers)}
        )
        yield process
        info = InfoMetricFamily("made_model", "The loaded artifacts, one per model version.")
        for model in loaded:
            m = model.engine.manifest
            info.add_metric(
                [],
                {
                    "model": model.name,
                    "version": model.version,
                    "name": m.name,
                    "sha256": m.onnx.sha256,
                    "members": str(m.num_members),
                    "dim": str(m.dim),
                },
            )
        yield info


class Metrics:
    """The app's metrics; the request middleware and the batcher report into it."""

    def __init__(self, state: ServingState):
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "made_http_requests",
            "HTTP requests by route template, method, status and model ('' off model routes).",
            ["route", "method", "status", "model"],
            registry=registry,
        )
        self.latency = Histogram(
            "made_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template and model.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "made_http_requests_in_progress",
            "Requests being served now, by method.",
            ["method"],
            registry=registry,
        )
        self.batch_rows = Histogram(
            "made_batch_rows",
            "Rows in each batched model call, by model.",
            ["model"],
            buckets=batch_size_buckets(state.settings.max_batch_size),
            registry=registry,
        )
        self.queue_wait = Histogram(
            "made_batch_queue_wait_seconds",
            "Time a request's rows waited in the batch queue, by model.",
            ["model"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "made_batch_rejected",
            "Requests refused with 503 because a model's batch queue was full.",
            ["model"],
            registry=registry,
        )
        registry.register(ServingStateCollector(state))
        # labels() takes a lock and builds a key each call; the label sets are few, so keep them.
        self._per_request: dict[tuple[str, str, int, str], tuple[Counter, Histogram]] = {}
        self._in_progress: dict[str, Gauge] = {}

    def batch_stats(self, model: str) -> BatchStats:
        """What ``model``'s batcher reports (a model name is one of the repository's folders, so
        the label's values are bounded)."""
        return BatchStats(
            on_batch=self.batch_rows.labels(model).observe,
            on_queue_wait=self.queue_wait.labels(model).observe,
            on_reject=self.rejected.labels(model).inc,
        )

    def request_started(self, method: str) -> Gauge:
        """Count the request as in progress; the caller decrements the returned gauge."""
        gauge = self._in_progress.get(method)
        if gauge is None:
            gauge = self._in_progress[method] = self.in_progress.labels(method)
        gauge.inc()
        return gauge

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, model: str = ""
    ) -> None:
        """``model``: the model the request reached ('' for none), so an unknown name a client
        sends never becomes a label value."""
        key = (route, method, status, model)
        children = self._per_request.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status), model),
                self.latency.labels(route, model),
            )
            self._per_request[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
