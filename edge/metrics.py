"""Prometheus metrics of one serving process, on a private registry (never the global one)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["METRICS_CONTENT_TYPE", "ServingMetrics"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class ServingMetrics:
    """The counters, histograms and gauges a serving process exposes on ``/metrics``.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Where the metrics live; a new private registry by default, so that two servers (or two
        tests) in one process never share or collide on metrics.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fedge_serving_requests", "Prediction requests by HTTP status and model version.",
            ["status", "version"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "fedge_serving_request_seconds", "Prediction request latency in the server, by version.",
            ["version"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "fedge_serving_batch_rows", "Rows per model run (after micro-batching).",
            buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "fedge_serving_model_info", "The model versions loaded (1 per slot role).",
            ["role", "version", "precision", "signer"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "fedge_serving_errors", "Server-side failures while predicting, by kind.", ["kind"], registry=r
        )
        self.rejected = Counter(
            "fedge_serving_rejected_inputs", "Requests refused before the model ran, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.activations = Counter(
            "fedge_edge_activations", "Model activation attempts by the edge agent, by result and reason.",
            ["result", "reason"], registry=r,
        )  # fmt: skip
        self._request_children: dict[tuple[int, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self.shadow = Counter(
            "fedge_serving_shadow_rows", "Rows a shadow model also ran, by its version and agreement.",
            ["version", "outcome"], registry=r,
        )  # fmt: skip

    def record_request(self, *, status: int, version: str, seconds: float | None = None) -> None:
        """Count one prediction request (and its latency when it reached a model).

        The labelled children are bound once per (status, version) and reused: a ``labels()`` lookup
        per request costs more than the count itself.
        """
        counter = self._request_children.get((status, version))
        if counter is None:
            counter = self._request_children[status, version] = self.requests.labels(str(status), version)
        counter.inc()
        if seconds is not None:
            histogram = self._latency_children.get(version)
            if histogram is None:
                histogram = self._latency_children[version] = self.latency.labels(version)
            histogram.observe(seconds)

    def record_batch(self, rows: int) -> None:
        """Record the size of one model run."""
        self.batch_rows.observe(rows)

    def record_rejection(self, reason: str) -> None:
        """Count one request refused for ``reason`` (``nan``, ``width``, ``invalid_json``...)."""
        self.rejected.labels(reason).inc()

    def record_error(self, kind: str) -> None:
        """Count one failure on the server's side."""
        self.errors.labels(kind).inc()

    def record_activation(self, result: str, reason: str) -> None:
        """Count one activation attempt by the agent (``activated``/``refused``/``rolled_back``...)."""
        self.activations.labels(result, reason).inc()

    def record_shadow(self, version: str, *, agreed: int, disagreed: int) -> None:
        """Count a shadow model's rows that agreed (same argmax) or not with the answering model."""
        if agreed:
            self.shadow.labels(version, "agreed").inc(agreed)
        if disagreed:
            self.shadow.labels(version, "disagreed").inc(disagreed)

    def set_models(self, models: dict[str, tuple[str, str, str]]) -> None:
        """Show exactly ``models`` (role -> (version, precision, signer)) in the model info gauge."""
        self.model_info.clear()
        for role, (version, precision, signer) in models.items():
            self.model_info.labels(role, version, precision, signer).set(1)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
