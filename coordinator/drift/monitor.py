"""The ServerApp's drift work over Flower: the reference at release, and monitoring windows (mode=monitor).

Both send ``query.drift`` messages through ``grid.send_and_receive`` and read back only what a client's
:mod:`client.drift_telemetry` sends: noisy counts, window size, status.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from coordinator.drift.launch import open_drift_service
from coordinator.drift.reference import fine_grid, load_reference, monitored_features, reference_edges
from fedge.config import DriftSettings, FedgeConfig
from fedge.drift_plan import PlanInput, plan_monitoring
from fedge.drift_summary import DriftReference, SiteSummary, drift_reduction, record_array, record_value
from fedge.errors import ConfigError, FederationError
from fedge.protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    COUNTS_KEY,
    DRIFT_QUERY,
    EDGES_KEY,
    META_KEY,
    METRICS_KEY,
    MODE_REFERENCE,
    MODE_REFERENCE_FINE,
    MODE_WINDOW,
    NUM_EXAMPLES,
    QUERY_KEY,
)
from fedge.serde import state_dict_from_safetensors, state_dict_to_arrays
from fedge.tasks import Task
from registry import Registry, RunStatus, open_registry

__all__ = [
    "NodeCounts",
    "check_monitoring_plan",
    "federated_performance",
    "query_drift",
    "release_reference",
    "run_monitor",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeCounts:
    """One node's reply to a drift query."""

    node_id: int
    status: str
    window_size: int
    epsilon: float
    counts: np.ndarray | None
    class_counts: np.ndarray | None
    reason: str


def _node_ids(grid: Grid, wanted: int, timeout_s: float = 120.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= wanted or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


def query_drift(
    grid: Grid,
    *,
    mode: str,
    edges: np.ndarray,
    features: list[int],
    num_classes: int = 0,
    window: int = 0,
    arrays: ArrayRecord | None = None,
    min_nodes: int = 1,
    timeout_s: float = 300.0,
) -> list[NodeCounts]:
    """Send one drift query to every node and collect the replies (errors logged and skipped)."""
    content: dict[str, Any] = {
        QUERY_KEY: ConfigRecord(
            {"mode": mode, "window": window, "num_classes": num_classes, "features": features}
        ),
        EDGES_KEY: ArrayRecord({"edges": Array(np.ascontiguousarray(edges, dtype=np.float64))}),
    }
    if arrays is not None:
        content[ARRAYS_KEY] = arrays
    messages = [
        Message(content=RecordDict(content), dst_node_id=node, message_type=DRIFT_QUERY)
        for node in _node_ids(grid, min_nodes)
    ]
    out = []
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        node = int(reply.metadata.src_node_id)
        if reply.has_error():
            log.warning("node %d failed the drift query: %s", node, reply.error.reason)
            continue
        meta = reply.content[META_KEY]
        status = str(record_value(meta, "status"))
        counts = class_counts = None
        if status == "ok":
            record = reply.content[COUNTS_KEY]
            counts = record_array(record, "counts")
            class_counts = record_array(record, "class_counts") if "class_counts" in record else None
        else:
            log.info("node %d sent no drift counts (%s): %s", node, status, record_value(meta, "reason", ""))
        out.append(
            NodeCounts(
                node_id=node,
                status=status,
                window_size=int(record_value(meta, "window_size", 0)),
                epsilon=float(record_value(meta, "epsilon", 0.0)),
                counts=counts,
                class_counts=class_counts,
                reason=str(record_value(meta, "reason", "")),
            )
        )
    return out


def federated_performance(
    grid: Grid,
    *,
    arrays: ArrayRecord,
    metric: str,
    min_nodes: int = 1,
    window: int = 0,
    timeout_s: float = 300.0,
) -> float | None:
    """Federated evaluation of ``arrays`` on the clients' current data: the sample-weighted mean of
    ``metric`` over the nodes that answered (``None`` if none did). Only metrics cross the wire."""
    messages = [
        Message(
            content=RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: ConfigRecord({"drift-window": window})}),
            dst_node_id=node,
            message_type="evaluate",
        )
        for node in _node_ids(grid, min_nodes)
    ]
    total = weighted = 0.0
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        if reply.has_error() or METRICS_KEY not in reply.content:
            log.warning("node %d failed the evaluation: %s", reply.metadata.src_node_id, reply.error.reason
                        if reply.has_error() else "no metrics")  # fmt: skip
            continue
        metrics = reply.content[METRICS_KEY]
        if metric not in metrics:
            continue
        n = float(metrics.get(NUM_EXAMPLES, 0.0))  # type: ignore[arg-type]
        total += n
        weighted += n * float(metrics[metric])  # type: ignore[arg-type]
    return weighted / total if total > 0 else None


def release_reference(
    grid: Grid,
    *,
    settings: DriftSettings,
    task: Task,
    model_arrays: ArrayRecord,
    public_rows: np.ndarray,
    model_name: str,
    min_nodes: int,
) -> DriftReference | None:
    """Fix a version's reference from the clients' noisy training histograms (coordinator.drift.reference).

    The counted values are ``task.drift_features`` of the clients' examples (computed at the clients);
    the predicted-class histogram is asked for only when the task's target is a classification.
    ``public_rows`` are the coordinator's own examples ``[n, *input_spec.shape]``.

    Returns ``None`` (the version is released unmonitored, with a warning) when no client answered.
    """
    features = monitored_features(settings, task)
    fine = fine_grid(task, features, settings.fine_bins, public_rows)
    step1 = [r for r in query_drift(grid, mode=MODE_REFERENCE_FINE, edges=fine, features=features,
                                    min_nodes=min_nodes) if r.counts is not None]  # fmt: skip
    if not step1:
        log.warning("no client sent reference counts: the version is released without a drift reference")
        return None
    edges = reference_edges(_total([r.counts for r in step1]), fine, settings.num_bins)
    step2 = [
        r
        for r in query_drift(grid, mode=MODE_REFERENCE, edges=edges, features=features,
                             num_classes=task.target.num_classes, arrays=model_arrays, min_nodes=min_nodes)
        if r.counts is not None
    ]  # fmt: skip
    if not step2:
        log.warning("no client sent reference counts: the version is released without a drift reference")
        return None
    class_parts = [r.class_counts for r in step2 if r.class_counts is not None]
    names = task.drift_feature_names()
    reference = DriftReference(
        model=model_name,
        version=0,  # numbered at registration; load_reference fills it in
        features=features,
        feature_names=[names[i] for i in features],
        edges=edges,
        counts=_total([r.counts for r in step2]),
        class_counts=np.sum(class_parts, axis=0) if len(class_parts) == len(step2) else None,
        epsilon=2 * settings.reference_epsilon,
        sites=len(step2),
        reduction=drift_reduction(task.drift, task.input_spec),
        rows=int(sum(r.window_size for r in step2)),
    )
    log.info("drift reference fixed from %d sites, %d features x %d bins", len(step2), *edges.shape)
    return reference


def run_monitor(*, grid: Grid, config: FedgeConfig, flower_run_id: int) -> None:
    """``mode=monitor``: query ``drift.windows`` windows of the ``production`` version and store reports.

    Decisions (the policy, a retraining run) are the coordinator's, outside this Flower run.
    """
    settings, run_id, registry_config = config.drift, config.run_id, config.registry
    registry = open_registry(registry_config)
    service = open_drift_service(settings, registry, registry_config.resolved_database_url())
    try:
        registry.store.update_run(run_id, status=RunStatus.RUNNING, flower_run_id=flower_run_id)
        name = config.task.name
        version = registry.resolve(f"{name}@production")
        reference = load_reference(registry, name, version.number)
        service.use_reference(reference)
        arrays = _version_arrays(registry, version)
        # Every simulated client, or the strategy's minimum in deployment, before a window is asked for.
        min_nodes = config.strategy.min_available_nodes
        simulated = registry.store.get_run(run_id).mode == "simulation"
        if simulated:
            min_nodes = max(min_nodes, config.simulation.num_clients)
        check_monitoring_plan(settings, reference, sites=min_nodes,
                              rows=settings.window_size if simulated else settings.min_window)  # fmt: skip
        for window in range(settings.windows):
            replies = query_drift(
                grid, mode=MODE_WINDOW, edges=reference.edges, features=reference.features,
                num_classes=reference.num_classes, window=window, arrays=arrays, min_nodes=min_nodes,
            )  # fmt: skip
            summaries = [
                SiteSummary(f"node-{r.node_id}", name, version.number, window, r.window_size, r.counts,
                            r.class_counts, r.epsilon, mechanism=settings.mechanism)
                for r in replies
                if r.counts is not None
            ]  # fmt: skip
            if not summaries:
                log.warning("window %d: no site sent counts", window)
                continue
            # The policy decides as each window lands; without a launcher here a fired decision is recorded
            # as a requested run (its evidence in the audit log) for the coordinator to start.
            report, trigger = service.ingest(
                summaries, source="flower", actor=f"flower-run-{flower_run_id}", stream=run_id
            )
            top = max(report.overall["psi"])
            log.info(
                "window %d: %d sites, max psi %.3f, flagged %s", window, len(summaries), top, report.flagged
            )
            if trigger is None and settings.policy.min_performance > 0:
                # The performance rule: the production version evaluated on the clients' current data.
                performance = federated_performance(
                    grid, arrays=arrays, metric=settings.policy.performance_metric, min_nodes=min_nodes,
                    window=window,
                )  # fmt: skip
                metric = settings.policy.performance_metric
                log.info("window %d: federated %s %s", window, metric, performance)
                trigger = service.evaluate(
                    name, version.number, performance=performance, source="flower", stream=run_id
                )
            if trigger is not None:
                log.warning(
                    "window %d: the drift policy fired (%s): %s", window, trigger.outcome, trigger.reason
                )
    except BaseException as exc:
        registry.store.update_run(run_id, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        service.store.close()
        registry.close()


def check_monitoring_plan(
    settings: DriftSettings, reference: DriftReference, *, sites: int, rows: int
) -> None:
    """The power plan of this monitoring (:mod:`fedge.drift_plan`) before any window is asked for.

    ``rows`` per site per window: the simulation's ``drift.window_size``, or in deployment the smallest
    window a site may send (``drift.min_window``). Logs the plan; warns when no shift up to 3 sd is
    detectable.

    Raises
    ------
    ConfigError
        When the calibrated test cannot hold ``drift.false_alarm_rate`` (or the mechanism cannot run at
        this epsilon), with the numbers and what to change.
    """
    config = PlanInput(
        features=len(reference.features) or reference.counts.shape[0],
        bins=reference.counts.shape[1],
        epsilon=settings.epsilon,
        rows=max(rows, 1),
        sites=max(sites, 1),
        mechanism=settings.mechanism,
        delta=settings.delta,
        windows=max(settings.policy.consecutive_windows, 2),
        consecutive=settings.policy.consecutive_windows,
        false_alarm_rate=settings.false_alarm_rate,
        num_classes=reference.num_classes,
        reference_epsilon=settings.reference_epsilon,
        contribution_bound=settings.contribution_bound,
    )
    result = plan_monitoring(config, draws=200)
    text = "\n".join(result.lines())
    if (
        result.false_alarm_rate != result.false_alarm_rate
        or result.false_alarm_rate > result.false_alarm_limit
    ):
        raise ConfigError(f"drift monitoring refused: the false-alarm rate cannot be held\n{text}")
    if result.accepted:
        log.info("drift monitoring plan:\n%s", text)
    else:
        log.warning("drift monitoring will not detect shifts that matter:\n%s", text)


def _total(parts: list[np.ndarray | None]) -> np.ndarray:
    return np.sum(np.stack([p for p in parts if p is not None]), axis=0)


def _version_arrays(registry: Registry, version: Any) -> ArrayRecord:
    try:
        return state_dict_to_arrays(state_dict_from_safetensors(registry.read_artifact(version, "weights")))
    except Exception as exc:
        raise FederationError(f"cannot load the weights of {version.name}:{version.number}: {exc}") from exc
