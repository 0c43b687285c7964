"""Drift at the coordinator: the real app on a real SQLite db, the policy, the trigger and its cooldown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings, create_app
from coordinator.drift.aggregate import aggregate_window, site_statistics
from coordinator.drift.policy import RetrainRequest
from coordinator.drift.reference import LINEAGE_KEY, manifest_entry
from coordinator.drift.service import DriftService
from coordinator.drift.store import DriftReportStore
from edge.drift_push import EdgeDriftWindow, push_summary
from fedge.api_client import ApiClient
from fedge.config import DriftPolicyConfig, DriftSettings, FedgeConfig
from fedge.drift import compare, fixed_bin_edges, histogram_counts
from fedge.drift_summary import DriftReference, SiteSummary
from fedge.privacy_ledger import PrivacyLedger
from registry import ModelVersionCreate, Registry, RegistryConfig, RunCreate, RunStatus
from tests.apps import role_tokens

FEATURES, BINS, CLASSES = 4, 5, 3


def _reference(version: int = 1) -> DriftReference:
    rng = np.random.default_rng(0)
    edges = fixed_bin_edges(np.full(FEATURES, -2.5), np.full(FEATURES, 2.5), BINS)
    counts = histogram_counts(rng.normal(size=(5000, FEATURES)), edges).astype(float)
    return DriftReference(
        "digits", version, list(range(FEATURES)), [f"f{i}" for i in range(FEATURES)], edges, counts,
        np.array([1000.0, 2000.0, 2000.0]), 1.0, 5,
    )  # fmt: skip


def _register(registry: Registry, reference: DriftReference | None) -> None:
    registry.store.create_run(
        RunCreate(
            run_id="r1", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64
        )
    )
    registry.store.update_run("r1", status=RunStatus.COMPLETED)
    registry.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r1",
            checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", b"onnx"),),
            metrics={},
            lineage={LINEAGE_KEY: reference.to_dict()} if reference is not None else {},
            model_config={},
        ),
        aliases=("production",),
    )


def _summary(site: str, window: int, shift: float = 0.0, seed: int = 1, **kw: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ref = _reference()
    counts = histogram_counts(rng.normal(size=(500, FEATURES)) + shift, ref.edges).astype(float)
    body = {
        "site": site, "model": "digits", "version": 1, "window": window, "window_size": 500,
        "counts": counts.tolist(), "class_counts": [100.0, 200.0, 200.0], "epsilon": 1.0,
    }  # fmt: skip
    return {**body, **kw}


def _device_token(client: TestClient, device: str) -> str:
    """A new ``device`` token bound to ``device``, from the app's own token store."""
    return str(client.app.state.tokens.create(name=f"device-{device}", role="device", device=device)[1])  # type: ignore[attr-defined]


def _post(client: TestClient, body: dict[str, Any]) -> Any:
    """POST ``body`` with a device token bound to its site (what the site's device sends)."""
    token = _device_token(client, body["site"])
    return client.post("/api/v1/drift/summaries", json=body, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Registry]]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    app = create_app(CoordinatorSettings(registry=config, drift=DriftSettings(min_window=100)))
    tokens = role_tokens(config.resolved_database_url())
    _register(app.state.registry, _reference())
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {tokens['viewer']}"
        yield client, tokens, app.state.registry


def test_a_valid_summary_is_stored_and_reported_with_its_epsilon_window_and_sites(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api

    posted = _post(client, _summary("device-a", 0))
    reports = client.get("/api/v1/drift/reports", params={"model": "digits"}).json()

    assert posted.status_code == 201, posted.text
    assert len(reports) == 1
    r = reports[0]
    assert (r["window"], r["sites"], r["window_rows"], r["epsilon"]) == (0, ["device-a"], 500, 1.0)
    assert set(r["overall"]) == {"psi", "js", "kl", "wasserstein", "pvalue", "flagged", "window_pvalue"}
    assert len(r["overall"]["psi"]) == FEATURES and set(r["per_site"]) == {"device-a"}
    assert r["classes"] is not None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"counts": [[1.0] * (BINS - 1)] * FEATURES}, "has counts of shape"),
        ({"window_size": -5}, "greater than or equal to 1"),
        ({"window": -1}, "greater than or equal to 0"),
        ({"version": 7}, "unknown version digits:7"),
        ({"counts": [[-1.0] * BINS] * FEATURES}, "negative"),
        ({"class_counts": [1.0, 2.0]}, "class counts"),
        ({"rows": [[0.1, 0.2]]}, "Extra inputs are not permitted"),
        ({"window_size": 50}, "min_window"),
    ],
)
def test_malformed_summaries_are_refused_with_422_and_leave_the_reports_intact(api, change, match) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api
    assert _post(client, _summary("device-a", 0)).status_code == 201
    before = client.get("/api/v1/drift/reports").json()

    refused = _post(client, {**_summary("device-b", 0), **change})

    assert refused.status_code == 422
    assert match in refused.text
    assert client.get("/api/v1/drift/reports").json() == before


def test_the_edge_body_carries_only_noisy_counts_window_size_and_identifiers(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api
    ref = _reference()
    window = EdgeDriftWindow(
        manifest_entry(ref), model="digits", version=1, site="device-z",
        settings=DriftSettings(min_window=100), ledger=PrivacyLedger(tmp_path / "l.json", budget_epsilon=3),
        rng=np.random.default_rng(0),
    )  # fmt: skip
    rows = np.random.default_rng(1).normal(size=(300, FEATURES))
    window.add(rows, predicted=np.zeros(300, dtype=int))

    body = window.close()
    assert body is not None
    token = _device_token(client, "device-z")
    result = push_summary(ApiClient(str(client.base_url), token=token, client=client), body)

    assert set(body) == {
        "site", "model", "version", "window", "window_size", "counts", "class_counts", "epsilon", "delta",
        "mechanism",
    }  # fmt: skip
    assert body["window_size"] == 300 and np.shape(body["counts"]) == (FEATURES, BINS)
    assert not np.array_equal(body["counts"], histogram_counts(rows, ref.edges))
    assert result["sites"] == 1
    window.add(rows[:50])
    assert window.close() is None, "below the minimum window nothing is sent"
    window.add(rows)  # served rows without their predictions: no class histogram of zeros plus noise
    unpredicted = window.close()
    assert unpredicted is not None and unpredicted["class_counts"] is None


def test_per_site_statistics_match_scipy_on_the_same_counts() -> None:
    from scipy.spatial.distance import jensenshannon
    from scipy.special import rel_entr
    from scipy.stats import wasserstein_distance

    ref = _reference()
    rng = np.random.default_rng(9)
    sites = rng.integers(0, 300, size=(6, FEATURES, BINS)).astype(float)
    sites[2, :, ::2] = 0.0  # empty bins: smoothing keeps PSI and KL finite, JS and W need none
    eps = 1e-6

    stats = site_statistics(ref.counts, sites, ref.edges, smoothing=eps, threads=2)

    def smooth(c: np.ndarray) -> np.ndarray:
        return (c / c.sum() + eps) / (1 + BINS * eps)

    centres = (ref.edges[:, :-1] + ref.edges[:, 1:]) / 2
    for s in range(6):
        for f in range(FEATURES):
            p, q = smooth(ref.counts[f]), smooth(sites[s, f])
            p0, q0 = ref.counts[f] / ref.counts[f].sum(), sites[s, f] / sites[s, f].sum()
            assert stats["psi"][s, f] == pytest.approx(np.sum(rel_entr(p, q) + rel_entr(q, p)), abs=1e-9)
            assert stats["kl"][s, f] == pytest.approx(np.sum(rel_entr(p, q)), abs=1e-9)
            assert stats["js"][s, f] == pytest.approx(jensenshannon(p0, q0) ** 2, abs=1e-9)
            w = wasserstein_distance(centres[f], centres[f], p0, q0)
            assert stats["wasserstein"][s, f] == pytest.approx(w, abs=1e-9)


def test_aggregation_matches_the_kernel_overall_and_per_site() -> None:
    ref = _reference()
    rng = np.random.default_rng(5)
    rows = [rng.normal(size=(400, FEATURES)) + i / 4 for i in range(3)]
    summaries = [
        SiteSummary(f"s{i}", "digits", 1, 0, 400, histogram_counts(x, ref.edges).astype(float), None, 1.0)
        for i, x in enumerate(rows)
    ]

    agg = aggregate_window(ref, summaries)

    total = sum(s.counts for s in summaries)
    expected = compare(ref.counts, total, ref.edges)
    for stat in ("psi", "js", "kl", "wasserstein"):
        np.testing.assert_allclose(agg.overall[stat], getattr(expected, stat), rtol=0, atol=1e-12)
        for i, s in enumerate(summaries):
            site = compare(ref.counts, s.counts, ref.edges)
            np.testing.assert_allclose(agg.per_site[stat][i], getattr(site, stat), rtol=0, atol=1e-12)


class _Launcher:
    """Records the runs it is asked for in the registry, as the real launcher's execute_run does."""

    def __init__(self, registry: Registry) -> None:
        self.registry, self.requests = registry, []  # type: ignore[var-annotated]

    def __call__(self, request: RetrainRequest) -> None:
        self.requests.append(request)
        self.registry.store.create_run(
            RunCreate(run_id=request.run_id, task=request.model, strategy="fedavg", num_rounds=1, config={},
                      config_hash="0" * 64, reason=request.reason)
        )  # fmt: skip


@pytest.fixture
def service(registry: Registry, tmp_path: Path) -> Iterator[tuple[DriftService, _Launcher]]:
    _register(registry, _reference())
    launcher = _Launcher(registry)
    store = DriftReportStore.from_url(f"sqlite:///{tmp_path / 'drift.db'}")
    policy = DriftPolicyConfig(cooldown_s=3600)
    svc = DriftService(
        store=store,
        registry=registry,
        settings=DriftSettings(min_window=100, policy=policy),
        launcher=launcher,
    )
    yield svc, launcher
    store.close()


def _window(svc: DriftService, window: int, shift: float) -> Any:
    ref = _reference()
    rng = np.random.default_rng(window)
    summaries = [
        SiteSummary(f"site-{i}", "digits", 1, window, 500,
                    histogram_counts(rng.normal(size=(500, FEATURES)) + (shift if i < 3 else 0.0), ref.edges)
                    .astype(float), None, 1.0)
        for i in range(5)
    ]  # fmt: skip
    return svc.ingest(summaries, source="flower", actor="test")


def test_a_triggered_run_exists_with_its_reason_and_the_cooldown_stops_a_second(service, registry) -> None:  # type: ignore[no-untyped-def]
    svc, launcher = service

    _, none = _window(svc, 0, shift=1.0)
    report, trigger = _window(svc, 1, shift=1.0)
    _, again = _window(svc, 2, shift=1.0)

    assert none is None and report.flagged
    assert trigger is not None and trigger.outcome == "started"
    run = registry.store.get_run(trigger.run_id)
    assert run.reason.startswith("drift-policy: calibrated test") and "windows 0, 1" in run.reason
    assert [r.run_id for r in launcher.requests] == [trigger.run_id]
    assert launcher.requests[0].warm_start_from == "digits@production"
    audit = [e for e in registry.store.list_audit() if e.action == "drift.triggered"]
    assert (
        len(audit) == 1 and audit[0].actor == "drift-policy" and audit[0].details["run_id"] == trigger.run_id
    )
    assert again is not None and again.outcome == "cooldown"
    assert len(launcher.requests) == 1


def test_a_run_in_progress_is_not_duplicated(service, registry) -> None:  # type: ignore[no-untyped-def]
    svc, launcher = service
    svc.trigger.policy = DriftPolicyConfig(cooldown_s=0)
    registry.store.create_run(
        RunCreate(
            run_id="busy", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64
        )
    )

    _window(svc, 0, shift=1.0)
    _, trigger = _window(svc, 1, shift=1.0)

    assert trigger is not None and trigger.outcome == "in-progress" and trigger.run_id == "busy"
    assert launcher.requests == []


def test_no_shift_does_not_trigger(service) -> None:  # type: ignore[no-untyped-def]
    svc, launcher = service

    results = [_window(svc, w, shift=0.0) for w in range(3)]

    assert all(t is None for _, t in results) and not any(r.flagged for r, _ in results)
    assert launcher.requests == []


def test_status_metrics_and_cli_views(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api
    for w in range(2):
        for i in range(3):
            _post(client, _summary(f"d{i}", w, shift=1.0, seed=w * 10 + i))

    status = client.get("/api/v1/drift/status").json()
    metrics = client.get("/metrics").text
    triggers = client.get("/api/v1/drift/triggers").json()

    assert status["versions"][0]["flagged"] is True
    assert (
        'fedge_drift_statistic{feature="f0",model="digits",source="edge",statistic="psi",stream="d0",version="1"}'
        in metrics
    )
    assert [t["outcome"] for t in triggers][-1] == "requested", "no launcher in the API: the run is requested"
    assert all(t["outcome"] == "cooldown" for t in triggers[:-1])


def test_requested_runs_are_started_once_with_the_trigger_run_id_reason_and_warm_start(
    registry: Registry, tmp_path: Path
) -> None:
    """Without a launcher (edge pushes, monitor runs) a fired policy records a requested run; the
    deployment coordinator's watcher opens it through its run manager, once."""
    from coordinator.drift.launch import start_requested_runs

    _register(registry, _reference())
    store = DriftReportStore.from_url(f"sqlite:///{tmp_path / 'drift.db'}")
    svc = DriftService(
        store=store,
        registry=registry,
        settings=DriftSettings(min_window=100, policy=DriftPolicyConfig(cooldown_s=3600)),
    )
    try:
        _window(svc, 0, shift=1.0)
        _, trigger = _window(svc, 1, shift=1.0)
        assert trigger is not None and trigger.outcome == "requested"
        created: list[tuple[FedgeConfig, str, str]] = []

        def create(config: FedgeConfig, reason: str, run_id: str) -> None:
            created.append((config, reason, run_id))

        assert start_requested_runs(store, registry, create) == [trigger.run_id]
        config, reason, run_id = created[0]
        assert run_id == trigger.run_id and config.run_id == trigger.run_id
        assert reason == trigger.reason and "calibrated test" in reason
        assert config.warm_start_from == "digits@production" and config.mode == "train"
        assert store.triggers(limit=1)[0].outcome == "started"
        assert start_requested_runs(store, registry, create) == [], "a started run is not started again"

        def refuses(config: FedgeConfig, reason: str, run_id: str) -> None:
            raise RuntimeError("SuperLink down")

        store.set_outcome(trigger.id, "requested")
        assert start_requested_runs(store, registry, refuses) == []
        assert store.triggers(limit=1)[0].outcome == "launch-failed"
    finally:
        store.close()
