"""GET /api/v1/webhooks/deliveries: real app, real SQLite registry, a real receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings, create_app
from fedge.config import WebhookConfig
from registry import ModelVersionCreate, Registry, RegistryConfig, RunCreate
from tests.apps import role_tokens
from tests.webhook_receiver import Receiver

SECRET_ENV = "FEDGE_TEST_WEBHOOK_SECRET"


@pytest.fixture
def api(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, str], Registry]]:
    monkeypatch.setenv(SECRET_ENV, "api-secret")
    config = RegistryConfig(
        root=str(tmp_path / "reg"),
        webhooks=[WebhookConfig(url=receiver.url + "?key=hidden", events=[], secret_env=SECRET_ENV)],
    )
    app = create_app(CoordinatorSettings(registry=config))
    tokens = role_tokens(config.resolved_database_url())
    with TestClient(app) as client:
        yield client, tokens, app.state.registry


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register_three(registry: Registry) -> None:
    registry.store.create_run(
        RunCreate(run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64)
    )
    for i in range(3):
        registry.register_version(
            ModelVersionCreate(
                name="digits",
                run_id="r",
                checkpoint_id=None,
                artifacts=(registry.put_artifact("onnx", f"model {i}".encode()),),
                metrics={},
                lineage={},
                model_config={},
            )
        )
    assert registry.webhooks is not None and registry.webhooks.drain()


def test_an_admin_pages_through_the_delivery_log(api: Any, receiver: Receiver) -> None:
    client, tokens, registry = api
    register_three(registry)
    assert len(receiver.received) == 3
    first = client.get("/api/v1/webhooks/deliveries", params={"limit": 2}, headers=auth(tokens["admin"]))
    assert first.status_code == 200, first.text
    page = first.json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (3, 2, 0, 2)
    second = client.get(
        "/api/v1/webhooks/deliveries", params={"limit": 2, "offset": 2}, headers=auth(tokens["admin"])
    ).json()
    ids = [d["id"] for d in page["items"] + second["items"]]
    assert len(set(ids)) == 3
    item = page["items"][0]
    assert (item["event"], item["status"], item["attempts"], item["status_code"]) == (
        "version_registered", "delivered", 1, 200,
    )  # fmt: skip
    assert item["url"] == receiver.url and "hidden" not in first.text
    only = client.get(
        "/api/v1/webhooks/deliveries", params={"event": "alias_moved"}, headers=auth(tokens["admin"])
    ).json()
    assert only["total"] == 0


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_an_admin_reads_the_log(api: Any, role: str) -> None:
    client, tokens, _ = api
    answer = client.get("/api/v1/webhooks/deliveries", headers=auth(tokens[role]))
    assert answer.status_code == 403
    assert client.get("/api/v1/webhooks/deliveries").status_code == 401


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "many"}, {"event": "x\x00y"}]
)
def test_bad_paging_is_422(api: Any, params: dict[str, Any]) -> None:
    client, tokens, _ = api
    answer = client.get("/api/v1/webhooks/deliveries", params=params, headers=auth(tokens["admin"]))
    assert answer.status_code == 422
