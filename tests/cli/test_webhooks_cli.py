"""The real ``fedge`` command: a local promotion notifies registry.webhooks; the delivery log lists it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedge.errors import NotFoundError
from fedge.webhook_signature import verify_signature
from registry import RegistryConfig, open_registry
from tests.cli.test_cli_errors import run_fedge
from tests.cli.test_cli_governance import _seed
from tests.webhook_receiver import Receiver


def test_a_cli_promotion_is_delivered_and_listed(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDGE_CLI_HOOK_SECRET", "cli-secret")
    root = tmp_path / "reg"
    _seed(root)
    hooks = (
        f"registry.webhooks=[{{url:'{receiver.url}',events:[alias_moved],secret_env:FEDGE_CLI_HOOK_SECRET}}]"
    )
    moved = run_fedge(
        "registry", "promote", "digits:1=staging", "--reason", "ship it", "--root", str(root), "-o", hooks,
        cwd=tmp_path,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    [delivery] = receiver.received
    headers = delivery["headers"]
    verify_signature(
        "cli-secret", headers["X-Fedge-Timestamp"], delivery["body"], headers["X-Fedge-Signature"]
    )
    assert json.loads(delivery["body"])["data"]["alias"] == "staging"

    listed = run_fedge("registry", "webhooks", "deliveries", "--root", str(root), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert page["total"] == 1
    assert page["items"][0]["event"] == "alias_moved" and page["items"][0]["status"] == "delivered"
    table = run_fedge("registry", "webhooks", "deliveries", "--root", str(root), cwd=tmp_path)
    assert table.returncode == 0 and "alias_moved" in table.stdout and "delivered" in table.stdout


def test_a_non_http_webhook_in_the_config_is_refused_before_anything_moves(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    _seed(root)
    hooks = "registry.webhooks=[{url:'ftp://127.0.0.1/x',secret_env:S}]"
    refused = run_fedge(
        "registry",
        "promote",
        "digits:1=staging",
        "--reason",
        "r",
        "--root",
        str(root),
        "-o",
        hooks,
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    assert "registry.webhooks[0].url must be an http:// or https:// URL" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    registry = open_registry(RegistryConfig(root=str(root)))
    try:
        with pytest.raises(NotFoundError):
            registry.store.get_alias("digits", "staging")
    finally:
        registry.close()


def test_deliveries_are_listed_from_a_coordinator_url_with_an_admin_token(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import uvicorn

    from coordinator.api import CoordinatorSettings, create_app
    from fedge.config import WebhookConfig
    from fedge.processes import free_port
    from tests.apps import role_tokens

    monkeypatch.setenv("FEDGE_CLI_HOOK_SECRET", "cli-secret")
    monkeypatch.delenv("FEDGE_TOKEN", raising=False)
    root = tmp_path / "reg"
    _seed(root)
    config = RegistryConfig(
        root=str(root), webhooks=[WebhookConfig(url=receiver.url, secret_env="FEDGE_CLI_HOOK_SECRET")]
    )
    app = create_app(CoordinatorSettings(registry=config))
    tokens = role_tokens(config.resolved_database_url())
    registry = app.state.registry
    registry.store.update_run("r", status="completed")
    from registry import promote

    promote(registry, moves=[("digits:1", "staging")], actor="alice", reason="r", gates=config.gates)
    assert registry.webhooks.drain()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, name="uvicorn-webhooks", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        listed = run_fedge(
            "registry",
            "webhooks",
            "deliveries",
            "--url",
            url,
            "--token",
            tokens["admin"],
            "--json",
            cwd=tmp_path,
        )
        assert listed.returncode == 0, listed.stderr
        page = json.loads(listed.stdout)
        assert page["total"] == 1 and page["items"][0]["event"] == "alias_moved"
        refused = run_fedge(
            "registry", "webhooks", "deliveries", "--url", url, "--token", tokens["viewer"], cwd=tmp_path
        )
        assert refused.returncode != 0 and "admin" in (refused.stderr + refused.stdout).lower()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
