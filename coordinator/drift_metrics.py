"""Prometheus gauges of drift: the latest window's statistic per model, feature and statistic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric

__all__ = ["DriftMetrics"]


class DriftMetrics:
    """Drift gauges on their own :class:`CollectorRegistry`; also a collector, so the app's scrape
    registry can include them (``scrape_registry.register(drift_metrics)``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.statistic = Gauge(
            "fedge_drift_statistic",
            "Latest window's drift of the summed site counts from the version's reference",
            ["model", "version", "feature", "statistic"],
            registry=self.registry,
        )
        self.flagged_site_fraction = Gauge(
            "fedge_drift_flagged_site_fraction",
            "Share of the reporting sites flagged by the policy in the latest window",
            ["model", "version"],
            registry=self.registry,
        )
        self.window = Gauge(
            "fedge_drift_window", "Latest reported window", ["model", "version"], registry=self.registry
        )
        self.epsilon = Gauge(
            "fedge_drift_window_epsilon",
            "Largest per-site epsilon of the latest window",
            ["model", "version"],
            registry=self.registry,
        )
        self.triggers = Counter(
            "fedge_drift_triggers",
            "Policy decisions that fired, by outcome",
            ["model", "outcome"],
            registry=self.registry,
        )

    def collect(self) -> Iterator[Metric]:
        """Every drift metric (the collector protocol)."""
        yield from self.registry.collect()

    def observe(self, report: Any) -> None:
        """Set the gauges from a stored :class:`~coordinator.drift_reports.DriftReport`."""
        labels = {"model": report.model, "version": str(report.version)}
        for stat, values in report.overall.items():
            for feature, value in zip(report.features, values, strict=True):
                self.statistic.labels(**labels, feature=feature, statistic=stat).set(value)
        for stat, value in (report.classes or {}).items():
            self.statistic.labels(**labels, feature="predicted_class", statistic=stat).set(value)
        self.window.labels(**labels).set(report.window)
        self.epsilon.labels(**labels).set(report.epsilon)

    def set_flagged_fraction(self, model: str, version: int, fraction: float) -> None:
        """Share of flagged sites in the latest window."""
        self.flagged_site_fraction.labels(model=model, version=str(version)).set(fraction)

    def triggered(self, model: str, outcome: str) -> None:
        """Count a fired decision."""
        self.triggers.labels(model=model, outcome=outcome).inc()
