"""The coordinator's Prometheus metrics, read from a real SQLite registry at scrape time."""

from __future__ import annotations

import itertools
import logging
import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from coordinator.metrics import (
    DURATION_BUCKETS,
    RUN_STATUSES,
    CoordinatorCollector,
    metrics_registry,
    render_metrics,
    round_durations,
)
from fedge.serde import state_dict_to_safetensors
from registry import ArtifactRef, Checkpoint, Registry, RunCreate, RunInfo

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- factories ------------------------------------------------------------------------------------
def _create_run(registry: Registry, run_id: str, *, status: str | None = None) -> None:
    registry.store.create_run(
        RunCreate(
            run_id=run_id,
            task="digits",
            strategy="fedavg",
            num_rounds=3,
            config={},
            config_hash="0" * 64,
        )
    )
    if status is not None:
        registry.store.update_run(run_id, status=status)


def _checkpoint(
    registry: Registry,
    run_id: str,
    round: int,
    metrics: dict[str, float],
    nodes: int = 2,
) -> None:
    weights = state_dict_to_safetensors({"w": torch.full((2,), float(round))}, {"run_id": run_id})
    registry.register_checkpoint(
        run_id=run_id,
        round=round,
        weights=weights,
        metrics=metrics,
        lineage={"round": round, "nodes": [{"node_id": i, "num_examples": 10} for i in range(nodes)]},
    )


def _scrape(registry: Registry, **kwargs: Any) -> Samples:
    body, content_type = render_metrics(metrics_registry(registry, **kwargs))
    assert content_type == CONTENT_TYPE_LATEST
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def _expected_durations(registry: Registry, run_id: str) -> list[float]:
    """Durations from the timestamps the registry stored (they cannot be chosen via its API)."""
    run = registry.store.get_run(run_id)
    moments = [run.created_at] + [c.created_at for c in registry.store.list_checkpoints(run_id)]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]


# --- the pure duration function ---------------------------------------------------------------------
def _run_info(created_at: datetime) -> RunInfo:
    return RunInfo(
        run_id="r",
        task="digits",
        strategy="fedavg",
        num_rounds=3,
        status="running",
        config={},
        config_hash="0" * 64,
        reason="operator",
        mode="simulation",
        flower_run_id=None,
        error=None,
        created_at=created_at,
        finished_at=None,
    )


def _checkpoint_info(round: int, created_at: datetime) -> Checkpoint:
    return Checkpoint(
        id=round,
        run_id="r",
        round=round,
        weights=ArtifactRef("weights", "a" * 64, 1),
        metrics={},
        lineage={},
        created_at=created_at,
    )


def test_round_durations_start_at_the_run_and_follow_the_previous_checkpoint() -> None:
    start = datetime(2025, 1, 1, 12, 0, 0)  # naive, as SQLite returns it
    run = _run_info(start)
    checkpoints = [
        _checkpoint_info(3, start + timedelta(seconds=100)),
        _checkpoint_info(1, start + timedelta(seconds=7.5)),
        _checkpoint_info(2, start + timedelta(seconds=40)),
    ]

    durations = round_durations(run, checkpoints)

    assert durations == [7.5, 32.5, 60.0]


def test_round_durations_mix_zones_and_clamp_clock_skew_to_zero() -> None:
    start = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    run = _run_info(start)
    checkpoints = [
        _checkpoint_info(1, (start - timedelta(seconds=2)).replace(tzinfo=None)),
        _checkpoint_info(2, start + timedelta(seconds=3)),
    ]

    assert round_durations(run, checkpoints) == [0.0, 5.0]


# --- scrapes ------------------------------------------------------------------------------------------
def test_empty_registry_emits_every_status_at_zero_and_no_last_aggregate(registry: Registry) -> None:
    samples = _scrape(registry)

    assert samples[("fedge_registry_up", ())] == 1.0
    for status in RUN_STATUSES:
        assert samples[("fedge_runs", (("status", status),))] == 0.0
    assert samples[("fedge_rounds_completed_total", ())] == 0.0
    assert samples[("fedge_round_duration_seconds_count", ())] == 0.0
    assert samples[("fedge_round_duration_seconds_sum", ())] == 0.0
    assert samples[("fedge_round_duration_seconds_bucket", (("le", "+Inf"),))] == 0.0
    names = _names(samples)
    assert "fedge_round_participants" not in names
    assert "fedge_last_aggregate_loss" not in names
    assert "fedge_last_aggregate_accuracy" not in names
    assert "fedge_nodes_online" not in names


def test_scrape_reads_runs_rounds_durations_and_the_newest_aggregate(registry: Registry) -> None:
    # Prepare: an older completed run, a failed one without rounds, a stopped one, a pending one
    # and the running one, whose last checkpoint is the newest overall.
    _create_run(registry, "old")
    _checkpoint(registry, "old", 1, {"central-loss": 0.9, "central-accuracy": 0.3, "participants": 4.0})
    registry.store.update_run("old", status="completed")
    _create_run(registry, "done")
    _checkpoint(registry, "done", 1, {"central-loss": 0.7, "participants": 5.0})
    _checkpoint(registry, "done", 2, {"central-loss": 0.6}, nodes=3)  # participants from the lineage
    registry.store.update_run("done", status="completed")
    _create_run(registry, "broken", status="failed")
    _create_run(registry, "halted", status="stopped")
    _create_run(registry, "queued")
    _create_run(registry, "live", status="running")
    _checkpoint(registry, "live", 1, {"eval-loss": 0.8, "participants": 2.0})
    _checkpoint(
        registry,
        "live",
        2,
        {"central-loss": 0.25, "eval-loss": 0.5, "eval-accuracy": 0.875, "participants": 6.0},
    )

    # Execute
    samples = _scrape(registry, nodes_online=lambda: 7)

    # Assert
    assert samples[("fedge_registry_up", ())] == 1.0
    assert {status: samples[("fedge_runs", (("status", status),))] for status in RUN_STATUSES} == {
        "pending": 1.0,
        "running": 1.0,
        "completed": 2.0,
        "failed": 1.0,
        "stopped": 1.0,
        "interrupted": 0.0,
        "resumed": 0.0,
    }
    assert samples[("fedge_rounds_completed_total", ())] == 5.0

    durations = [d for run in ("old", "done", "live") for d in _expected_durations(registry, run)]
    assert len(durations) == 5 and all(d >= 0 for d in durations)
    assert samples[("fedge_round_duration_seconds_count", ())] == 5.0
    assert math.isclose(samples[("fedge_round_duration_seconds_sum", ())], sum(durations), abs_tol=1e-9)
    for bound in DURATION_BUCKETS:
        expected = float(sum(1 for d in durations if d <= bound))
        assert samples[("fedge_round_duration_seconds_bucket", (("le", str(bound)),))] == expected
    assert samples[("fedge_round_duration_seconds_bucket", (("le", "+Inf"),))] == 5.0

    participants = {labels: v for (name, labels), v in samples.items() if name == "fedge_round_participants"}
    assert participants == {(("run_id", "live"),): 6.0, (("run_id", "done"),): 3.0}

    # central-loss wins over eval-loss; without central-accuracy, eval-accuracy is used
    assert samples[("fedge_last_aggregate_loss", ())] == 0.25
    assert samples[("fedge_last_aggregate_accuracy", ())] == 0.875
    assert samples[("fedge_nodes_online", ())] == 7.0


def test_last_aggregate_samples_are_absent_when_the_newest_checkpoint_lacks_them(
    registry: Registry,
) -> None:
    _create_run(registry, "a", status="running")
    _checkpoint(registry, "a", 1, {"central-loss": 0.4, "central-accuracy": 0.9})
    _checkpoint(registry, "a", 2, {"train-loss": 0.3})

    samples = _scrape(registry)

    names = _names(samples)
    assert "fedge_last_aggregate_loss" not in names
    assert "fedge_last_aggregate_accuracy" not in names
    assert samples[("fedge_round_participants", (("run_id", "a"),))] == 2.0


def test_scrape_reads_only_the_recent_runs(registry: Registry) -> None:
    _create_run(registry, "first", status="completed")
    _create_run(registry, "second", status="running")
    _checkpoint(registry, "second", 1, {"eval-loss": 0.5})
    reg = metrics_registry(registry, recent_runs=1)

    body, _ = render_metrics(reg)

    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    runs = {s.labels["status"]: s.value for s in families["fedge_runs"].samples}
    assert runs["completed"] == 0.0 and runs["running"] == 1.0
    assert families["fedge_rounds_completed"].samples[0].value == 1.0


def test_recent_runs_must_be_positive(registry: Registry) -> None:
    with pytest.raises(ValueError, match="recent_runs must be at least 1"):
        CoordinatorCollector(registry, recent_runs=0)


def test_unavailable_registry_reports_down_and_never_raises(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _create_run(registry, "a", status="running")
    _checkpoint(registry, "a", 1, {"central-loss": 0.4})
    registry.close()
    shutil.rmtree(tmp_path / "reg")  # SQLite can neither open nor recreate the database now

    with caplog.at_level(logging.WARNING, logger="coordinator.metrics"):
        samples = _scrape(registry, nodes_online=lambda: 3)

    assert samples[("fedge_registry_up", ())] == 0.0
    assert samples[("fedge_nodes_online", ())] == 3.0
    assert _names(samples) == {"fedge_registry_up", "fedge_nodes_online"}
    assert "the registry is unavailable" in caplog.text


def test_failing_node_count_is_omitted_not_raised(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> int:
        raise RuntimeError("superlink unreachable")

    with caplog.at_level(logging.WARNING, logger="coordinator.metrics"):
        samples = _scrape(registry, nodes_online=broken)

    assert samples[("fedge_registry_up", ())] == 1.0
    assert "fedge_nodes_online" not in _names(samples)
    assert "superlink unreachable" in caplog.text


# --- the series the alert rules in deploy/prometheus/rules/fedge.yml need -----------------------
def test_a_run_failing_sets_the_last_failure_timestamp(registry: Registry) -> None:
    _create_run(registry, "ok", status="completed")
    _create_run(registry, "bad")
    assert "fedge_run_last_failure_timestamp_seconds" not in _names(_scrape(registry))

    registry.store.update_run("bad", status="failed")

    failed_at = registry.store.get_run("bad").finished_at
    assert failed_at is not None
    expected = (failed_at if failed_at.tzinfo else failed_at.replace(tzinfo=UTC)).timestamp()
    assert _scrape(registry)[("fedge_run_last_failure_timestamp_seconds", ())] == pytest.approx(expected)


def test_node_states_give_a_gauge_per_node_and_the_online_count(registry: Registry) -> None:
    states = {"site-a": "online", "site-b": "online"}
    samples = _scrape(registry, node_states=lambda: states)
    assert samples[("fedge_node_online", (("node", "site-a"),))] == 1.0
    assert samples[("fedge_node_online", (("node", "site-b"),))] == 1.0
    assert samples[("fedge_nodes_online", ())] == 2.0

    states["site-b"] = "offline"  # the node disconnects

    samples = _scrape(registry, node_states=lambda: states)
    assert samples[("fedge_node_online", (("node", "site-b"),))] == 0.0
    assert samples[("fedge_nodes_online", ())] == 1.0


def test_failing_node_states_are_omitted_not_raised(registry: Registry) -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("the SuperLink is gone")

    names = _names(_scrape(registry, node_states=broken))
    assert "fedge_node_online" not in names and "fedge_nodes_online" not in names
    assert "fedge_runs" in names
