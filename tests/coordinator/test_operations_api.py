"""The operator routes (runs, nodes, tokens, metrics): real app, real SQLite registry, no SuperLink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings, create_app
from coordinator.deployment import Deployment, DeploymentSettings
from fedge.errors import FederationError
from fedge.serde import state_dict_to_safetensors
from fedge.tls import init_federation_tls
from registry import Registry, RegistryConfig, RunCreate, open_registry
from tests.apps import operator_app, role_tokens

Api = tuple[TestClient, dict[str, str], Registry]


# --- factories ------------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    app, tokens = operator_app(CoordinatorSettings(registry=config))
    with TestClient(app) as client:
        yield client, tokens, app.state.registry


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create_run(registry: Registry, run_id: str, *, num_rounds: int = 3, reason: str = "operator") -> None:
    registry.store.create_run(
        RunCreate(
            run_id=run_id,
            task="digits",
            strategy="fedavg",
            num_rounds=num_rounds,
            config={},
            config_hash="0" * 64,
            reason=reason,
        )
    )


def _node(node_id: int, name: str) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "name": name,
        "data_fingerprint": f"fp-{name}",
        "data_rows": 100,
        "num_examples": 80,
        "secret": "never shown",
    }


def _checkpoint(registry: Registry, run_id: str, round: int, nodes: list[dict[str, Any]]) -> None:
    weights = state_dict_to_safetensors({"w": torch.full((2,), float(round))}, {"run_id": run_id})
    registry.register_checkpoint(
        run_id=run_id,
        round=round,
        weights=weights,
        metrics={"central-accuracy": 0.5 + round / 10},
        lineage={"round": round, "nodes": nodes, "failed_nodes": 0},
    )


def _error(response: Any) -> dict[str, str]:
    return response.json()["error"]


# --- creating runs --------------------------------------------------------------------------------
def test_creating_a_run_needs_an_operator_token(api: Api) -> None:
    client, tokens, registry = api
    body = {"overrides": ["strategy.num_rounds=1"]}

    anonymous = client.post("/api/v1/runs", json=body)
    viewer = client.post("/api/v1/runs", json=body, headers=auth(tokens["viewer"]))

    assert anonymous.status_code == 401 and _error(anonymous)["code"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert viewer.status_code == 403 and _error(viewer)["code"] == "forbidden"
    assert "this needs 'operator'" in _error(viewer)["message"]
    assert registry.store.list_runs(limit=10) == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"overrides": ["strategy.nope=1"]}, "strategy.nope"),
        ({"overrides": ["strategy.num_rounds=many"]}, "strategy.num_rounds"),
        ({"overrides": ["registry.root=/tmp/x"]}, "registry"),
        ({"overrides": ["+registry.database_url=sqlite:///x.db"]}, "registry"),
        ({"config": "nope"}, "nope"),
    ],
)
def test_a_bad_run_config_is_422_naming_the_key(api: Api, body: dict[str, Any], named: str) -> None:
    client, tokens, registry = api

    response = client.post("/api/v1/runs", json=body, headers=auth(tokens["operator"]))

    assert response.status_code == 422, response.text
    assert _error(response)["code"] == "config_invalid"
    assert named in _error(response)["message"]
    assert registry.store.list_runs(limit=10) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"overrides": [], "num_supernodes": 4}, "num_supernodes"),
        ({"config": "../etc/passwd"}, "config"),
        ({"overrides": "strategy.num_rounds=1"}, "overrides"),
    ],
)
def test_a_malformed_body_is_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    client, tokens, _ = api

    response = client.post("/api/v1/runs", json=body, headers=auth(tokens["operator"]))

    assert response.status_code == 422
    assert field in response.text


def test_a_valid_run_without_a_deployment_is_409_naming_tls_dir(api: Api) -> None:
    client, tokens, registry = api

    response = client.post(
        "/api/v1/runs",
        json={"overrides": ["strategy.num_rounds=2"], "reason": "nightly"},
        headers=auth(tokens["operator"]),
    )

    assert response.status_code == 409, response.text
    assert _error(response)["code"] == "conflict"
    assert "--tls-dir" in _error(response)["message"]
    assert "fedge coordinator serve --tls-dir" in _error(response)["message"]
    assert registry.store.list_runs(limit=10) == []


# --- reading runs ---------------------------------------------------------------------------------
def test_runs_are_listed_with_rounds_done_from_checkpoints(api: Api) -> None:
    client, tokens, registry = api
    _create_run(registry, "run-a", num_rounds=3, reason="weekly")
    _create_run(registry, "run-b", num_rounds=5)
    _checkpoint(registry, "run-a", 1, [_node(1, "hospital-a")])
    _checkpoint(registry, "run-a", 2, [_node(1, "hospital-a")])

    listed = client.get("/api/v1/runs", headers=auth(tokens["viewer"]))
    pending = client.get("/api/v1/runs", params={"status": "pending"}, headers=auth(tokens["viewer"]))
    failed = client.get("/api/v1/runs", params={"status": "failed"}, headers=auth(tokens["viewer"]))
    anonymous = client.get("/api/v1/runs")

    assert listed.status_code == 200
    by_id = {r["run_id"]: r for r in listed.json()}
    assert set(by_id) == {"run-a", "run-b"}
    assert (by_id["run-a"]["rounds_done"], by_id["run-a"]["num_rounds"]) == (2, 3)
    assert (by_id["run-b"]["rounds_done"], by_id["run-b"]["num_rounds"]) == (0, 5)
    assert by_id["run-a"]["reason"] == "weekly" and by_id["run-a"]["status"] == "pending"
    assert {r["run_id"] for r in pending.json()} == {"run-a", "run-b"}
    assert failed.json() == []
    assert anonymous.status_code == 401


def test_an_unknown_run_is_404(api: Api) -> None:
    client, tokens, _ = api

    response = client.get("/api/v1/runs/no-such-run", headers=auth(tokens["viewer"]))

    assert response.status_code == 404
    assert _error(response)["code"] == "not_found" and "no-such-run" in _error(response)["message"]


def test_run_detail_has_rounds_metrics_and_participants(api: Api) -> None:
    client, tokens, registry = api
    big_id = 2**63 + 12345  # a uint64 Flower node id: JSON numbers would lose its last digits
    _create_run(registry, "run-a", num_rounds=2)
    _checkpoint(registry, "run-a", 1, [_node(big_id, "hospital-b"), _node(7, "hospital-a")])
    _checkpoint(registry, "run-a", 2, [_node(7, "hospital-a")])

    response = client.get("/api/v1/runs/run-a", headers=auth(tokens["viewer"]))

    assert response.status_code == 200
    detail = response.json()
    assert detail["run_id"] == "run-a" and detail["rounds_done"] == 2
    assert [r["round"] for r in detail["rounds"]] == [1, 2]
    assert detail["rounds"][0]["metrics"] == {"central-accuracy": pytest.approx(0.6)}
    assert detail["rounds"][1]["metrics"] == {"central-accuracy": pytest.approx(0.7)}
    assert [p["name"] for p in detail["rounds"][0]["participants"]] == ["hospital-b", "hospital-a"]
    assert detail["participants"] == [
        {
            "node_id": "7",
            "name": "hospital-a",
            "data_fingerprint": "fp-hospital-a",
            "data_rows": 100,
            "num_examples": 80,
        },
        {
            "node_id": str(big_id),
            "name": "hospital-b",
            "data_fingerprint": "fp-hospital-b",
            "data_rows": 100,
            "num_examples": 80,
        },
    ]
    assert "never shown" not in response.text


# --- tokens ---------------------------------------------------------------------------------------
def test_an_admin_creates_and_revokes_tokens_an_operator_cannot(api: Api) -> None:
    client, tokens, registry = api

    created = client.post(
        "/api/v1/tokens", json={"name": "grafana", "role": "viewer"}, headers=auth(tokens["admin"])
    )
    new = created.json()
    works = client.get("/api/v1/runs", headers=auth(new["token"]))
    cannot_operate = client.post("/api/v1/runs", json={}, headers=auth(new["token"]))
    by_operator = client.post(
        "/api/v1/tokens", json={"name": "sneaky", "role": "admin"}, headers=auth(tokens["operator"])
    )
    listed = client.get("/api/v1/tokens", headers=auth(tokens["admin"])).json()
    revoked = client.delete(f"/api/v1/tokens/{new['id']}", headers=auth(tokens["admin"]))
    after = client.get("/api/v1/runs", headers=auth(new["token"]))

    assert created.status_code == 201 and (new["name"], new["role"]) == ("grafana", "viewer")
    assert new["token"].startswith("fedge_")
    assert works.status_code == 200
    assert cannot_operate.status_code == 403
    assert by_operator.status_code == 403 and _error(by_operator)["code"] == "forbidden"
    assert "sneaky" not in {t["name"] for t in listed}
    assert all(new["token"] not in str(t) for t in listed)
    assert revoked.status_code == 200 and revoked.json() == {"id": new["id"], "revoked": True}
    assert after.status_code == 401 and after.headers["www-authenticate"] == "Bearer"
    actions = [(e.action, e.actor) for e in registry.store.list_audit(limit=100)]
    assert ("token.created", "admin-1") in actions and ("token.revoked", "admin-1") in actions


def test_a_token_with_an_unknown_role_is_422(api: Api) -> None:
    client, tokens, _ = api

    response = client.post(
        "/api/v1/tokens", json={"name": "root", "role": "superuser"}, headers=auth(tokens["admin"])
    )

    assert response.status_code == 422 and "role" in response.text


# --- metrics and nodes ----------------------------------------------------------------------------
def test_metrics_are_prometheus_text_for_a_viewer(api: Api) -> None:
    client, tokens, registry = api
    _create_run(registry, "run-a")

    response = client.get("/metrics", headers=auth(tokens["viewer"]))
    anonymous = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'fedge_runs{status="pending"} 1.0' in response.text
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "role", "body"),
    [
        ("GET", "/api/v1/nodes", "viewer", None),
        ("POST", "/api/v1/nodes", "admin", {"name": "hospital-a", "public_key": "ecdsa-sha2-nistp384 AAAA"}),
        ("DELETE", "/api/v1/nodes/hospital-a", "admin", None),
        ("GET", "/api/v1/runs/run-a/logs", "viewer", None),
        ("POST", "/api/v1/runs/run-a/stop", "operator", None),
    ],
)
def test_deployment_routes_without_a_deployment_are_409(
    api: Api, method: str, path: str, role: str, body: dict[str, str] | None
) -> None:
    client, tokens, registry = api
    _create_run(registry, "run-a")

    response = client.request(method, path, json=body, headers=auth(tokens[role]))

    assert response.status_code == 409, response.text
    assert "fedge coordinator serve --tls-dir" in _error(response)["message"]


def test_node_routes_need_an_admin_to_change_nodes(api: Api) -> None:
    client, tokens, _ = api

    enrol = client.post(
        "/api/v1/nodes",
        json={"name": "hospital-a", "public_key": "ecdsa-sha2-nistp384 AAAA"},
        headers=auth(tokens["operator"]),
    )
    revoke = client.delete("/api/v1/nodes/hospital-a", headers=auth(tokens["operator"]))

    assert enrol.status_code == 403 and revoke.status_code == 403


# --- a deployment that is not running ---------------------------------------------------------------
@pytest.fixture
def unstarted(tmp_path: Path) -> Iterator[tuple[Deployment, Registry]]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    registry = open_registry(config)
    init_federation_tls(tmp_path / "tls", ["localhost"])
    settings = DeploymentSettings(state_dir=tmp_path / "state", tls_dir=tmp_path / "tls")
    yield Deployment(settings, registry, config), registry
    registry.close()


@pytest.mark.parametrize("part", ["runs", "nodes", "control"])
def test_a_deployment_not_started_refuses_to_hand_out_its_parts(
    unstarted: tuple[Deployment, Registry], part: str
) -> None:
    deployment, _ = unstarted

    with pytest.raises(FederationError, match=r"not running: call Deployment.start\(\)") as caught:
        getattr(deployment, part)

    assert not deployment.started
    assert caught.value.code == "federation_failed"


def test_routes_given_a_deployment_that_is_not_running_are_502(
    unstarted: tuple[Deployment, Registry],
) -> None:
    deployment, _ = unstarted
    config = deployment.registry_config
    app = create_app(CoordinatorSettings(registry=config), deployment=deployment)
    tokens = role_tokens(config.resolved_database_url())

    with TestClient(app) as client:
        nodes = client.get("/api/v1/nodes", headers=auth(tokens["viewer"]))
        metrics = client.get("/metrics", headers=auth(tokens["viewer"]))

    assert nodes.status_code == 502 and "fedge coordinator serve --tls-dir" in _error(nodes)["message"]
    assert metrics.status_code == 200 and "fedge_nodes_online" not in metrics.text
