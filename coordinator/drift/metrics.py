"""Prometheus metrics of drift, read from the stored reports when scraped.

Drift windows land in more than one process (the operator API for edge pushes, a Flower monitor
run in the SuperLink's process tree), so in-process gauges would show only some of them: the
report store is the source of truth, as the registry is for :mod:`coordinator.metrics`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.drift.policy import window_verdict
from coordinator.drift.store import DriftReport, DriftReportStore
from fedge.config import DriftPolicyConfig

__all__ = ["DriftMetrics"]

log = logging.getLogger(__name__)


class DriftMetrics(Collector):
    """The latest window of every monitored version and stream, per feature and statistic, and the
    triggers."""

    def __init__(
        self, store: DriftReportStore, policy: DriftPolicyConfig, *, recent_reports: int = 500
    ) -> None:
        self.store, self.policy, self.recent_reports = store, policy, recent_reports

    def collect(self) -> Iterator[Metric]:
        """Every drift metric (a scrape never raises: a failing store yields nothing)."""
        try:
            latest: dict[tuple[str, int, str, str], DriftReport] = {}
            for report in self.store.reports(limit=self.recent_reports):
                # oldest first: the last one of each stream (monitor run, edge device) wins
                latest[(report.model, report.version, report.source, report.stream)] = report
            triggers = Counter((t.model, t.outcome) for t in self.store.triggers(limit=10_000))
        except Exception as exc:  # the database is down: the registry's fedge_registry_up says so
            log.warning("drift metrics unavailable: %s", exc)
            return
        statistic = GaugeMetricFamily(
            "fedge_drift_statistic",
            "Latest window's drift of the summed site counts from the version's reference",
            labels=["model", "version", "source", "stream", "feature", "statistic"],
        )
        flagged = GaugeMetricFamily(
            "fedge_drift_flagged_site_fraction",
            "Share of the reporting sites flagged by the policy in the latest window",
            labels=["model", "version", "source", "stream"],
        )
        window = GaugeMetricFamily(
            "fedge_drift_window",
            "Latest reported window of the stream",
            labels=["model", "version", "source", "stream"],
        )
        epsilon = GaugeMetricFamily(
            "fedge_drift_window_epsilon",
            "Largest per-site epsilon of the latest window",
            labels=["model", "version", "source", "stream"],
        )
        for (model, version, source, stream), report in sorted(latest.items()):
            labels = [model, str(version), source, stream]
            for stat, values in report.overall.items():
                if stat in ("flagged", "window_pvalue"):  # not per-feature statistics
                    continue
                for feature, value in zip(report.features, values, strict=True):
                    statistic.add_metric([*labels, feature, stat], float(value))
            for stat, value in (report.classes or {}).items():
                statistic.add_metric([*labels, "predicted_class", stat], float(value))
            flagged.add_metric(labels, window_verdict(report, self.policy).site_fraction)
            window.add_metric(labels, report.window)
            epsilon.add_metric(labels, report.epsilon)
        fired = CounterMetricFamily(
            "fedge_drift_triggers", "Policy decisions that fired, by outcome", labels=["model", "outcome"]
        )
        for (model, outcome), count in sorted(triggers.items()):
            fired.add_metric([model, outcome], count)
        yield from (statistic, flagged, window, epsilon, fired)
