"""The operator API: real FastAPI app, real SQLite registry and token table, TestClient transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings, create_app
from coordinator.auth import TokenStore
from fedge.errors import GateRefusedError, PermissionDeniedError
from registry import (
    AliasGate,
    GatesConfig,
    ModelVersionCreate,
    Registry,
    RegistryClient,
    RegistryConfig,
    RunCreate,
)
from tests.apps import role_tokens


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Registry]]:
    gates = GatesConfig(
        aliases={"production": AliasGate(min_metrics={"central-accuracy": 0.9}, required_approvals=1)}
    )
    config = RegistryConfig(root=str(tmp_path / "reg"), gates=gates)
    app = create_app(CoordinatorSettings(registry=config))
    tokens = role_tokens(config.resolved_database_url())
    registry: Registry = app.state.registry
    registry.store.create_run(
        RunCreate(run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64)
    )
    registry.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r",
            checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", b"onnx-bytes"),),
            metrics={"central-accuracy": 0.95},
            lineage={},
            model_config={},
        ),
        aliases=("candidate",),
    )
    with TestClient(app) as client:
        yield client, tokens, registry


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_token_is_401_and_a_wrong_token_too(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api

    missing = client.get("/api/v1/registry/versions")
    wrong = client.get("/api/v1/registry/versions", headers=auth("fedge_not-a-real-token"))

    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthenticated"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.json()["error"]["message"]


def test_a_viewer_reads_but_cannot_approve_or_promote(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, registry = api

    listed = client.get("/api/v1/registry/versions", headers=auth(tokens["viewer"]))
    approve = client.post(
        "/api/v1/registry/versions/digits:1/approvals",
        json={"alias": "production"},
        headers=auth(tokens["viewer"]),
    )
    promote = client.post(
        "/api/v1/registry/promotions",
        json={"moves": [{"version": "digits:1", "alias": "staging"}], "reason": "x"},
        headers=auth(tokens["viewer"]),
    )

    assert listed.status_code == 200 and listed.json()[0]["aliases"] == ["candidate"]
    assert approve.status_code == 403 and approve.json()["error"]["code"] == "forbidden"
    assert "has role 'viewer'; this needs 'operator'" in approve.json()["error"]["message"]
    assert promote.status_code == 403
    assert registry.store.list_approvals(1) == []


def test_production_needs_an_approval_then_promotes(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, registry = api
    body = {"moves": [{"version": "digits@candidate", "alias": "production"}], "reason": "weekly release"}

    refused = client.post("/api/v1/registry/promotions", json=body, headers=auth(tokens["operator"]))
    approved = client.post(
        "/api/v1/registry/versions/digits:1/approvals",
        json={"alias": "production", "comment": "reviewed"},
        headers=auth(tokens["admin"]),
    )
    promoted = client.post("/api/v1/registry/promotions", json=body, headers=auth(tokens["operator"]))

    assert refused.status_code == 409 and refused.json()["error"]["code"] == "gate_refused"
    assert "0 of 1 approvals" in refused.json()["error"]["message"]
    assert approved.status_code == 201 and approved.json()["actor"] == "admin-1"
    assert promoted.status_code == 200 and "production" in promoted.json()[0]["aliases"]
    event = registry.store.list_alias_events("digits", "production")[-1]
    assert (event.actor, event.reason) == ("operator-1", "weekly release")
    actions = [
        e["action"] for e in client.get("/api/v1/registry/audit", headers=auth(tokens["operator"])).json()
    ]
    assert actions[-3:] == ["gate.refused", "approval.given", "alias.moved"]
    verify = client.get("/api/v1/registry/audit/verify", headers=auth(tokens["operator"])).json()
    assert verify["ok"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"moves": [{"version": "1", "alias": "production"}], "reason": "x", "force": True}, "force"),
        ({"moves": [{"version": "1", "alias": "prod uction"}], "reason": "x"}, "alias"),
        ({"moves": [], "reason": "x"}, "moves"),
    ],
)
def test_malformed_promotion_is_422_naming_the_field(api, body, field) -> None:  # type: ignore[no-untyped-def]
    client, tokens, registry = api

    response = client.post("/api/v1/registry/promotions", json=body, headers=auth(tokens["operator"]))

    assert response.status_code == 422
    assert field in response.text
    assert registry.store.list_alias_events("digits", "production") == []


def test_python_client_round_trip_and_typed_errors(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _ = api
    viewer = RegistryClient(str(client.base_url), tokens["viewer"], client=client)
    operator = RegistryClient(str(client.base_url), tokens["operator"], client=client)

    (version,) = viewer.list_versions(name="digits")
    assert viewer.get_version("digits@candidate").id == version.id
    assert viewer.download_artifact("digits:1", "onnx") == b"onnx-bytes"
    with pytest.raises(PermissionDeniedError):
        viewer.approve("digits:1", alias="production")
    with pytest.raises(GateRefusedError, match="approvals"):
        operator.promote([("digits:1", "production")], reason="now")
    (staged,) = operator.promote([("digits:1", "staging")], reason="try it")
    assert "staging" in staged.aliases


def test_unknown_version_is_404_with_the_reference(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _ = api

    response = client.get("/api/v1/registry/versions/digits:9", headers=auth(tokens["viewer"]))

    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "message": "model 'digits' has no version 9"}


def test_revoked_token_is_refused(tmp_path: Path) -> None:
    store = TokenStore.from_url(f"sqlite:///{tmp_path / 't.db'}")
    info, secret = store.create(name="ci", role="operator")
    assert store.authenticate(secret).role == "operator"

    store.revoke(info.id)

    from fedge.errors import AuthenticationError

    with pytest.raises(AuthenticationError, match="unknown or revoked"):
        store.authenticate(secret)
    assert all(secret not in repr(t) for t in store.list())
    store.close()


def test_devices_report_aggregates_and_the_latest_per_device_is_listed(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _ = api
    kiosk = client.app.state.tokens.create(name="kiosk-7-token", role="device", device="kiosk-7")[1]
    report = {
        "device": "kiosk-7",
        "model": {"name": "digits", "version": "digits:1"},
        "served": 120,
        "health": {"status": "ok"},
        "drift": {"bin_edges": [0.0, 0.5, 1.0], "counts": {"pixel_0_0": [100, 20]}},
    }

    first = client.post("/api/v1/edge/reports", json=report, headers=auth(kiosk))
    second = client.post("/api/v1/edge/reports", json={**report, "served": 150}, headers=auth(kiosk))
    with_rows = client.post(
        "/api/v1/edge/reports", json={**report, "rows": [[0.1] * 64]}, headers=auth(kiosk)
    )
    anonymous = client.post("/api/v1/edge/reports", json=report)
    devices = client.get("/api/v1/edge/devices", headers=auth(tokens["viewer"])).json()

    assert first.status_code == 201 and second.status_code == 201
    assert with_rows.status_code == 422 and "rows" in with_rows.text
    assert anonymous.status_code == 401
    assert [(d["device"], d["served"], d["reported_by"]) for d in devices] == [
        ("kiosk-7", 150, "kiosk-7-token")
    ]


def test_the_openapi_schema_documents_every_routes_response(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api

    spec = client.get("/api/v1/openapi.json").json()

    undocumented = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            code = next(c for c in operation["responses"] if c.startswith("2"))
            content = operation["responses"][code].get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            named = "$ref" in schema or "$ref" in schema.get("items", {})
            if not named and not (content and "application/json" not in content):
                undocumented.append(f"{method.upper()} {path}")
    assert not undocumented, undocumented
    version = spec["components"]["schemas"]["VersionPublic"]["properties"]
    assert {"model_config", "aliases", "artifacts"} <= set(version)


def test_a_version_answers_its_model_config_under_that_name(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, registry = api

    response = client.get("/api/v1/registry/versions/digits:1", headers=auth(tokens["viewer"]))

    assert response.status_code == 200
    body = response.json()
    assert body["model_config"] == {} and body["aliases"] == ["candidate"]
    assert body["artifacts"][0]["sha256"] == registry.resolve("digits:1").artifacts[0].sha256
