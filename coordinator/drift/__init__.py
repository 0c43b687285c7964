"""Drift at the coordinator: aggregate the sites' noisy windows, store reports, decide when to retrain.

``aggregate`` (pure statistics) -> ``service`` (validate, store, aggregate, report, policy) with
``store`` (reports, summaries, triggers) and ``policy`` (when a run opens); ``reference`` fixes a
version's bins at release; ``monitor`` is the ServerApp's side over Flower (imported by the
ServerApp only: it loads flwr); ``launch`` wires the service into a process; ``metrics`` exposes
the stored reports to Prometheus.
"""

from coordinator.drift.launch import SimulationLauncher, open_drift_service, start_requested_runs
from coordinator.drift.metrics import DriftMetrics
from coordinator.drift.service import DriftService
from coordinator.drift.store import DriftReport, DriftReportStore, DriftTrigger

__all__ = [
    "DriftMetrics",
    "DriftReport",
    "DriftReportStore",
    "DriftService",
    "DriftTrigger",
    "SimulationLauncher",
    "open_drift_service",
    "start_requested_runs",
]
