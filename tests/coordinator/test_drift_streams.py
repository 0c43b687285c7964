"""Drift windows are numbered per stream: a monitor run's windows, each edge device's own.

A device's window 0 is never merged into a monitor run's window 0 (nor another device's): separate
reports, each with its own sites and epsilon; the policy's consecutive windows stay within a stream.
Real SQLite stores, the real app over TestClient.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from coordinator.api import CoordinatorSettings, create_app
from coordinator.drift.reference import manifest_entry
from coordinator.drift.service import DriftService
from coordinator.drift.store import DriftReportStore
from edge.drift_push import EdgeDriftWindow, push_summary
from fedge.api_client import ApiClient
from fedge.cli.main import app as cli
from fedge.config import DriftPolicyConfig, DriftSettings
from fedge.drift import histogram_counts
from fedge.drift_summary import SiteSummary
from fedge.errors import ConflictError, DataError
from fedge.privacy_ledger import PrivacyLedger
from registry import Registry, RegistryConfig, open_registry
from tests.apps import role_tokens
from tests.coordinator.test_drift_monitoring import (
    FEATURES,
    _device_token,
    _post,
    _reference,
    _register,
    _summary,
)


def _site(site: str, window: int, *, shift: float = 0.0, epsilon: float = 1.0, seed: int = 0) -> SiteSummary:
    rng = np.random.default_rng(seed)
    counts = histogram_counts(rng.normal(size=(500, FEATURES)) + shift, _reference().edges).astype(float)
    return SiteSummary(site, "digits", 1, window, 500, counts, None, epsilon)


@pytest.fixture
def svc(registry: Registry, tmp_path: Path) -> Iterator[DriftService]:
    _register(registry, _reference())
    store = DriftReportStore.from_url(f"sqlite:///{tmp_path / 'drift.db'}")
    settings = DriftSettings(min_window=100, policy=DriftPolicyConfig(cooldown_s=3600))
    yield DriftService(store=store, registry=registry, settings=settings)
    store.close()


def _flower_window(
    svc: DriftService, run: str, window: int, *, shift: float = 0.0, epsilon: float = 1.0
) -> Any:
    sites = [_site(f"node-{i}", window, shift=shift, epsilon=epsilon, seed=10 * window + i) for i in range(3)]
    return svc.ingest(sites, source="flower", actor="test", stream=run)


def test_a_device_window_0_is_reported_apart_from_a_monitor_runs_window_0_with_its_own_epsilon(svc) -> None:  # type: ignore[no-untyped-def]
    run_report, _ = _flower_window(svc, "monitor-1", 0, epsilon=2.0)
    device_report, _ = svc.ingest([_site("cam-17", 0, epsilon=1.0)], source="edge", actor="cam-17-token")

    assert (run_report.source, run_report.stream, run_report.window) == ("flower", "monitor-1", 0)
    assert run_report.sites == ["node-0", "node-1", "node-2"] and run_report.epsilon == 2.0
    assert (device_report.source, device_report.stream, device_report.window) == ("edge", "cam-17", 0)
    assert device_report.sites == ["cam-17"] and device_report.epsilon == 1.0
    assert device_report.window_rows == 500
    stored = svc.store.reports("digits", version=1)
    assert sorted((r.source, r.stream, len(r.sites), r.epsilon) for r in stored) == [
        ("edge", "cam-17", 1, 1.0), ("flower", "monitor-1", 3, 2.0),
    ]  # fmt: skip


def test_two_devices_and_two_monitor_runs_each_keep_their_own_window_0(svc) -> None:  # type: ignore[no-untyped-def]
    svc.ingest([_site("cam-1", 0)], source="edge", actor="a")
    svc.ingest([_site("cam-2", 0)], source="edge", actor="b")
    _flower_window(svc, "monitor-1", 0)
    _flower_window(svc, "monitor-2", 0)  # the same node names in a later run: not a duplicate

    reports = svc.store.reports("digits", version=1)

    assert sorted((r.stream, r.window, tuple(r.sites)) for r in reports) == [
        ("cam-1", 0, ("cam-1",)), ("cam-2", 0, ("cam-2",)),
        ("monitor-1", 0, ("node-0", "node-1", "node-2")), ("monitor-2", 0, ("node-0", "node-1", "node-2")),
    ]  # fmt: skip


def test_a_site_reporting_a_window_twice_in_its_stream_is_still_refused(svc) -> None:  # type: ignore[no-untyped-def]
    svc.ingest([_site("cam-1", 0)], source="edge", actor="a")

    with pytest.raises(ConflictError, match="already sent"):
        svc.ingest([_site("cam-1", 0, seed=3)], source="edge", actor="a")
    with pytest.raises(DataError, match="one device"):
        svc.ingest([_site("cam-1", 1), _site("cam-2", 1)], source="edge", actor="a")


def test_consecutive_flagged_windows_are_counted_within_one_stream_only(svc) -> None:  # type: ignore[no-untyped-def]
    # monitor-1 is flagged in window 0 only, monitor-2 in window 1 only: "0, 1" across runs is no evidence
    _, first = _flower_window(svc, "monitor-1", 0, shift=1.0)
    _flower_window(svc, "monitor-1", 1, shift=0.0)
    _flower_window(svc, "monitor-2", 0, shift=0.0)
    _, mixed = _flower_window(svc, "monitor-2", 1, shift=1.0)

    assert first is None and mixed is None
    assert svc.store.triggers("digits") == []

    _, fired = _flower_window(svc, "monitor-2", 2, shift=1.0)

    assert fired is not None and fired.outcome == "requested"
    assert fired.evidence["stream"] == "monitor-2" and fired.evidence["source"] == "flower"
    assert [w["window"] for w in fired.evidence["windows"]] == [1, 2]


def test_one_device_drifting_for_consecutive_windows_fires_the_policy(svc) -> None:  # type: ignore[no-untyped-def]
    _, none = svc.ingest([_site("cam-9", 0, shift=1.0)], source="edge", actor="a")
    report, fired = svc.ingest([_site("cam-9", 1, shift=1.0, seed=1)], source="edge", actor="a")

    assert none is None and report.flagged, "a device's stream is one site: min_sites does not block it"
    assert fired is not None and fired.evidence["stream"] == "cam-9"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    app = create_app(CoordinatorSettings(registry=config, drift=DriftSettings(min_window=100)))
    tokens = role_tokens(config.resolved_database_url())
    _register(app.state.registry, _reference())
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {tokens['viewer']}"
        yield c


def test_the_api_lists_a_devices_windows_apart_from_a_monitor_runs(client: TestClient) -> None:
    service: DriftService = client.app.state.drift  # type: ignore[attr-defined]
    _flower_window(service, "monitor-1", 0, epsilon=2.0)

    posted = _post(client, _summary("cam-17", 0))
    reports = client.get("/api/v1/drift/reports").json()
    status = client.get("/api/v1/drift/status").json()

    assert posted.status_code == 201 and posted.json()["sites"] == 1
    assert sorted((r["source"], r["stream"], r["window"], r["epsilon"]) for r in reports) == [
        ("edge", "cam-17", 0, 1.0), ("flower", "monitor-1", 0, 2.0),
    ]  # fmt: skip
    assert sorted((v["source"], v["stream"], v["sites"]) for v in status["versions"]) == [
        ("edge", "cam-17", 1), ("flower", "monitor-1", 3),
    ]  # fmt: skip
    metrics = client.get("/metrics").text
    assert (
        'fedge_drift_window_epsilon{model="digits",source="edge",stream="cam-17",version="1"} 1.0' in metrics
    )


def test_a_restarted_device_continues_its_window_numbers_and_is_not_refused(
    client: TestClient, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "privacy-ledger.json"
    rows = np.random.default_rng(1).normal(size=(300, FEATURES))
    token = _device_token(client, "cam-5")
    api = ApiClient(str(client.base_url), token=token, client=client)

    def device(version: int = 1) -> EdgeDriftWindow:  # what the agent builds when it (re)starts serving
        return EdgeDriftWindow(
            manifest_entry(_reference()), model="digits", version=version, site="cam-5",
            settings=DriftSettings(min_window=100),
            ledger=PrivacyLedger(ledger_path, budget_epsilon=10), rng=np.random.default_rng(0),
        )  # fmt: skip

    first = device()
    for _ in range(2):
        first.add(rows)
        body = first.close()
        assert body is not None
        push_summary(api, body)
    restarted = device()
    restarted.add(rows)
    after_restart = restarted.close()
    assert after_restart is not None
    accepted = push_summary(api, after_restart)

    assert after_restart["window"] == 2 and accepted["window"] == 2
    assert device(version=2).window == 0, "another version's windows are numbered on their own"
    reports = client.get("/api/v1/drift/reports", params={"model": "digits"}).json()
    assert sorted((r["stream"], r["window"]) for r in reports) == [("cam-5", 0), ("cam-5", 1), ("cam-5", 2)]


def test_drift_status_shows_each_stream_on_its_own_row(tmp_path: Path) -> None:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    registry = open_registry(config)
    _register(registry, _reference())
    store = DriftReportStore.from_url(config.resolved_database_url())
    service = DriftService(store=store, registry=registry, settings=DriftSettings(min_window=100))
    _flower_window(service, "monitor-1", 0)
    service.ingest([_site("cam-17", 0)], source="edge", actor="a")
    store.close()
    registry.close()

    table = CliRunner().invoke(cli, ["drift", "status", "--root", config.root], env={"COLUMNS": "250"})
    as_json = CliRunner().invoke(cli, ["drift", "status", "--root", config.root, "--json"])

    assert table.exit_code == 0, table.output
    assert "edge cam-17" in table.output and "flower monitor-1" in table.output
    rows = json.loads(as_json.output)["versions"]
    assert sorted((v["stream"], v["sites"]) for v in rows) == [("cam-17", 1), ("monitor-1", 3)]
