"""Prometheus metrics of the coordinator, computed from the registry at every scrape."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fedge.protocol import EVAL_ACCURACY, EVAL_LOSS
from registry import Checkpoint, Registry, RunInfo, RunStatus

__all__ = [
    "DURATION_BUCKETS",
    "RUN_STATUSES",
    "CoordinatorCollector",
    "metrics_registry",
    "render_metrics",
    "round_durations",
]

log = logging.getLogger(__name__)

# Every status is always emitted (0 when no run has it), so dashboards and alerts see a series.
RUN_STATUSES: tuple[str, ...] = (
    RunStatus.PENDING,
    RunStatus.RUNNING,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.STOPPED,
    RunStatus.INTERRUPTED,
    RunStatus.RESUMED,
)
# Upper bounds (seconds) of the round-duration histogram; +Inf is added when rendering.
DURATION_BUCKETS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# The round recorder's central evaluation keys come first; the nodes' weighted means are the fallback.
LOSS_KEYS = ("central-loss", EVAL_LOSS)
ACCURACY_KEYS = ("central-accuracy", EVAL_ACCURACY)
PARTICIPANTS_KEY = "participants"


def _utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; the registry writes them in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def round_durations(run: RunInfo, checkpoints: Sequence[Checkpoint]) -> list[float]:
    """Seconds each of a run's rounds took, in round order.

    A round ends when its checkpoint is recorded; it starts when the previous checkpoint was
    recorded or, for the run's first checkpoint, when the run was created.

    Parameters
    ----------
    run : RunInfo
        The run the checkpoints belong to.
    checkpoints : Sequence[Checkpoint]
        The run's checkpoints, in any order.

    Returns
    -------
    list[float]
        One duration per checkpoint, never negative (clock skew between the coordinator and the
        ServerApp's process is clamped to 0).
    """
    previous = _utc(run.created_at)
    out: list[float] = []
    for checkpoint in sorted(checkpoints, key=lambda c: c.round):
        end = _utc(checkpoint.created_at)
        out.append(max(0.0, (end - previous).total_seconds()))
        previous = end
    return out


def _participants(checkpoint: Checkpoint) -> float:
    """The recorder's count of training replies, else the nodes its lineage lists."""
    if PARTICIPANTS_KEY in checkpoint.metrics:
        return float(checkpoint.metrics[PARTICIPANTS_KEY])
    nodes = checkpoint.lineage.get("nodes", [])
    return float(len(nodes)) if isinstance(nodes, list) else 0.0


def _first_metric(checkpoint: Checkpoint, keys: Sequence[str]) -> float | None:
    return next((float(checkpoint.metrics[k]) for k in keys if k in checkpoint.metrics), None)


@dataclass(frozen=True)
class _Snapshot:
    """What one scrape read from the registry: the recent runs (newest first) and their checkpoints."""

    runs: list[RunInfo]
    checkpoints: dict[str, list[Checkpoint]]


class CoordinatorCollector(Collector):
    """Reads the registry at each scrape and yields the coordinator's metrics.

    The registry is the source of truth: the ServerApp records checkpoints from another process,
    so counters kept in this process would miss them. A scrape reads the ``recent_runs`` newest
    runs and their checkpoints (one query per run); run counts, rounds and durations cover that
    window only.

    Notes
    -----
    The metrics, all prefixed ``fedge_``:

    ``fedge_registry_up``
        1 when the registry answered, 0 when it failed (a warning is logged; no registry-derived
        metric is emitted then). A scrape never raises.
    ``fedge_runs{status}``
        Runs by status; all of pending, running, completed, failed and stopped, 0 when none.
    ``fedge_rounds_completed_total``
        Checkpoints (completed rounds) of the recent runs.
    ``fedge_round_duration_seconds``
        Histogram of round durations (see :func:`round_durations`).
    ``fedge_round_participants{run_id}``
        Nodes that trained in the latest round, for active (pending or running) runs and the most
        recently finished run with a checkpoint only, which keeps the label set small.
    ``fedge_last_aggregate_loss``, ``fedge_last_aggregate_accuracy``
        From the newest checkpoint overall: its central evaluation, else the nodes' weighted
        evaluation; absent when that checkpoint has neither.
    ``fedge_nodes_online``
        What ``nodes_online`` returns (else the online nodes ``node_states`` lists); absent without
        either or when it fails.
    ``fedge_node_online{node}``
        Per enrolled, unrevoked node: 1 while the SuperLink reports it online, else 0 (registered,
        offline, unknown); from ``node_states``, absent without it or when it fails.
    ``fedge_run_last_failure_timestamp_seconds``
        Unix time the newest failed run of the recent runs finished (or was created, without a
        finish time); absent while none failed. An alert fires while it is recent.

    Parameters
    ----------
    registry : Registry
        The registry to read.
    nodes_online : Callable[[], int] | None
        Counts the SuperNodes connected now.
    node_states : Callable[[], Mapping[str, str]] | None
        Each unrevoked node's name and its state at the SuperLink (``online``, ``offline``...).
    recent_runs : int
        How many of the newest runs a scrape reads.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        nodes_online: Callable[[], int] | None = None,
        node_states: Callable[[], Mapping[str, str]] | None = None,
        recent_runs: int = 200,
    ) -> None:
        if recent_runs < 1:
            raise ValueError(f"recent_runs must be at least 1, got {recent_runs}")
        self._registry = registry
        self._nodes_online = nodes_online
        self._node_states = node_states
        self._recent_runs = recent_runs

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families of one scrape; failures become ``fedge_registry_up 0``."""
        snapshot = self._read()
        up = GaugeMetricFamily("fedge_registry_up", "1 when the registry answered this scrape, else 0.")
        up.add_metric([], 1.0 if snapshot is not None else 0.0)
        yield up
        states = self._read_node_states()
        online = self._count_online()
        if online is None and states is not None:
            online = float(sum(1 for state in states.values() if state == "online"))
        if online is not None:
            yield GaugeMetricFamily("fedge_nodes_online", "SuperNodes connected now.", value=online)
        if states is not None:
            node = GaugeMetricFamily(
                "fedge_node_online",
                "1 while the enrolled node is online at the SuperLink, else 0.",
                labels=["node"],
            )
            for name, state in sorted(states.items()):
                node.add_metric([name], 1.0 if state == "online" else 0.0)
            yield node
        if snapshot is not None:
            yield from _families(snapshot)

    def _read(self) -> _Snapshot | None:
        # Any failure (database gone, locked, corrupt) must not fail the scrape: it is reported
        # as fedge_registry_up 0 so that an alert can fire on it.
        try:
            runs = self._registry.store.list_runs(limit=self._recent_runs)
            checkpoints = {run.run_id: self._registry.store.list_checkpoints(run.run_id) for run in runs}
        except Exception as exc:
            log.warning("metrics scrape: the registry is unavailable: %s", exc)
            return None
        return _Snapshot(runs=runs, checkpoints=checkpoints)

    def _read_node_states(self) -> Mapping[str, str] | None:
        if self._node_states is None:
            return None
        try:
            return dict(self._node_states())
        except Exception as exc:
            log.warning("metrics scrape: reading the nodes' states failed: %s", exc)
            return None

    def _count_online(self) -> float | None:
        if self._nodes_online is None:
            return None
        try:
            return float(self._nodes_online())
        except Exception as exc:
            log.warning("metrics scrape: counting the online nodes failed: %s", exc)
            return None


def _families(snapshot: _Snapshot) -> Iterator[Metric]:
    runs = GaugeMetricFamily("fedge_runs", "Runs by status (of the recent runs).", labels=["status"])
    for status in RUN_STATUSES:
        runs.add_metric([status], float(sum(1 for r in snapshot.runs if r.status == status)))
    yield runs

    failed = [r for r in snapshot.runs if r.status == RunStatus.FAILED]
    if failed:
        newest_failure = max(_utc(r.finished_at or r.created_at) for r in failed)
        yield GaugeMetricFamily(
            "fedge_run_last_failure_timestamp_seconds",
            "Unix time the newest failed run (of the recent runs) finished.",
            value=newest_failure.timestamp(),
        )

    all_checkpoints = [c for cps in snapshot.checkpoints.values() for c in cps]
    yield CounterMetricFamily(
        "fedge_rounds_completed",
        "Rounds completed (checkpoints recorded) by the recent runs.",
        value=float(len(all_checkpoints)),
    )

    durations = [d for run in snapshot.runs for d in round_durations(run, snapshot.checkpoints[run.run_id])]
    buckets = [(str(bound), float(sum(1 for d in durations if d <= bound))) for bound in DURATION_BUCKETS]
    buckets.append(("+Inf", float(len(durations))))
    yield HistogramMetricFamily(
        "fedge_round_duration_seconds",
        "Seconds from the previous checkpoint (or the run's creation) to a round's checkpoint.",
        buckets=buckets,
        sum_value=sum(durations),
    )

    participants = GaugeMetricFamily(
        "fedge_round_participants",
        "Nodes that trained in the latest round of active runs and of the latest finished run.",
        labels=["run_id"],
    )
    for run in _participant_runs(snapshot):
        latest = max(snapshot.checkpoints[run.run_id], key=lambda c: c.round)
        participants.add_metric([run.run_id], _participants(latest))
    yield participants

    if all_checkpoints:
        newest = max(all_checkpoints, key=lambda c: (_utc(c.created_at), c.id))
        for name, keys, what in (
            ("fedge_last_aggregate_loss", LOSS_KEYS, "Loss"),
            ("fedge_last_aggregate_accuracy", ACCURACY_KEYS, "Accuracy"),
        ):
            doc = f"{what} of the newest aggregate (central evaluation, else the nodes' weighted mean)."
            value = _first_metric(newest, keys)
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)


def _participant_runs(snapshot: _Snapshot) -> list[RunInfo]:
    """Active runs with a checkpoint, plus the most recently finished run with one."""
    with_rounds = [r for r in snapshot.runs if snapshot.checkpoints[r.run_id]]
    chosen = [r for r in with_rounds if r.status not in RunStatus.FINISHED]
    finished = [r for r in with_rounds if r.status in RunStatus.FINISHED]
    if finished:
        chosen.append(max(finished, key=lambda r: _utc(r.finished_at or r.created_at)))
    return chosen


def metrics_registry(
    registry: Registry,
    *,
    nodes_online: Callable[[], int] | None = None,
    node_states: Callable[[], Mapping[str, str]] | None = None,
    recent_runs: int = 200,
) -> CollectorRegistry:
    """Return a fresh :class:`CollectorRegistry` (never the global one) holding a coordinator collector.

    Parameters
    ----------
    registry : Registry
        The registry the metrics are read from.
    nodes_online : Callable[[], int] | None
        Counts the SuperNodes connected now; ``fedge_nodes_online`` is omitted without it.
    node_states : Callable[[], Mapping[str, str]] | None
        Each unrevoked node's state; ``fedge_node_online`` is omitted without it.
    recent_runs : int
        How many of the newest runs a scrape reads.

    Returns
    -------
    CollectorRegistry
        A registry to pass to :func:`render_metrics`.
    """
    reg = CollectorRegistry(auto_describe=False)
    reg.register(
        CoordinatorCollector(
            registry, nodes_online=nodes_online, node_states=node_states, recent_runs=recent_runs
        )
    )
    return reg


def render_metrics(reg: CollectorRegistry) -> tuple[bytes, str]:
    """Render ``reg`` in the Prometheus text format.

    Parameters
    ----------
    reg : CollectorRegistry
        Usually the one :func:`metrics_registry` built.

    Returns
    -------
    tuple[bytes, str]
        The body and its content type, ready for an HTTP response.
    """
    return generate_latest(reg), CONTENT_TYPE_LATEST
