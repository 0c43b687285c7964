"""Declared aliases: a typo'd alias is refused naming the declared ones, by the real `fedge` command
(local registry, exit 2) and by the operator API under uvicorn on 127.0.0.1 (422); only an admin
declares a new alias, and every refusal and declaration is in the audit log."""

from __future__ import annotations

import getpass
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from coordinator.api import CoordinatorSettings
from fedge.config import load_config
from fedge.errors import ConfigError, UndeclaredAliasError
from fedge.processes import free_port
from registry import (
    ModelVersionCreate,
    Registry,
    RegistryConfig,
    RunCreate,
    declare_alias,
    declared_aliases,
    open_registry,
    promote,
)
from tests.apps import operator_app
from tests.cli.test_cli_errors import run_fedge

DECLARED = "candidate, production, staging"


def _seed(registry: Registry) -> None:
    registry.store.create_run(
        RunCreate(run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64)
    )
    registry.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r",
            checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", b"x"),),
            metrics={"central-accuracy": 0.95, "onnx-parity-max-abs-diff": 1e-6},
            lineage={"nodes": [{"node_id": 1, "eval_metrics": {"eval-accuracy": 0.9}}]},
            model_config={},
        ),
        aliases=("candidate",),
    )


def _actions(registry: Registry) -> list[tuple[str, str, str]]:
    entries = registry.store.list_audit()
    return [
        (e.action, e.actor, e.subject) for e in entries if e.action in ("alias.refused", "alias.declared")
    ]


# --- config -----------------------------------------------------------------------------------------
def test_the_registry_config_declares_its_aliases_and_refuses_a_malformed_one() -> None:
    assert load_config([]).registry.declared_aliases() == ("candidate", "production", "staging")
    assert "canary" in load_config(["registry.aliases=[candidate,canary]"]).registry.declared_aliases()
    with pytest.raises(ConfigError, match=r"registry.aliases\[1\] must be lower-case"):
        load_config(["registry.aliases=[candidate,Prod]"])


def test_a_declared_alias_is_refused_twice_and_a_malformed_one_once(tmp_path: Path) -> None:
    registry = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    try:
        declare_alias(registry, "canary", actor="root", reason="canary fleet")
        with pytest.raises(Exception, match="alias 'canary' is already declared"):
            declare_alias(registry, "canary", actor="root", reason="again")
        with pytest.raises(ConfigError, match="alias must be lower-case"):
            declare_alias(registry, "../x", actor="root", reason="bad")
        assert declared_aliases(registry) == ["canary", "candidate", "production", "staging"]
    finally:
        registry.close()


# --- CLI on a local registry ------------------------------------------------------------------------
def test_cli_refuses_a_typo_naming_the_declared_then_accepts_it_once_declared(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    registry = open_registry(RegistryConfig(root=str(root)))
    _seed(registry)
    registry.close()
    common = ["--root", str(root)]

    typo = run_fedge("registry", "promote", "digits:1=prodcution", "--reason", "r", *common, cwd=tmp_path)
    approve_typo = run_fedge(
        "registry", "approve", "digits:1", "--alias", "prodcution", "--as", "alice", *common, cwd=tmp_path
    )
    added = run_fedge(
        "registry", "aliases", "add", "canary", "--reason", "fleet", "--as", "root", *common, cwd=tmp_path
    )
    listed = run_fedge("registry", "aliases", "list", *common, "--json", cwd=tmp_path)
    moved = run_fedge("registry", "promote", "digits:1=canary", "--reason", "r", *common, cwd=tmp_path)

    assert typo.returncode == 2, typo.stderr
    assert typo.stderr.strip() == (
        f"error [undeclared_alias]: alias 'prodcution' is not declared; declared aliases: {DECLARED} "
        "(an admin may declare one with `fedge registry aliases add NAME`)"
    )
    assert approve_typo.returncode == 2 and "'prodcution' is not declared" in approve_typo.stderr
    assert added.returncode == 0, added.stderr
    assert json.loads(listed.stdout) == ["canary", "candidate", "production", "staging"]
    assert moved.returncode == 0, moved.stderr
    assert "digits:1 (id 1) now holds" in moved.stdout and "canary" in moved.stdout
    registry = open_registry(RegistryConfig(root=str(root)))
    try:
        assert registry.store.get_alias("digits", "canary").number == 1
        assert _actions(registry) == [
            ("alias.refused", f"cli:{getpass.getuser()}", "digits:1"),
            ("alias.refused", "alice", "digits:1"),
            ("alias.declared", "root", "canary"),
        ]
        refused = registry.store.list_audit(action="alias.refused")[0]
        assert refused.details["alias"] == "prodcution"
        assert refused.details["declared"] == ["candidate", "production", "staging"]
    finally:
        registry.close()


def test_a_typo_in_one_move_moves_nothing(tmp_path: Path) -> None:
    registry = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    try:
        _seed(registry)
        with pytest.raises(UndeclaredAliasError, match="'stagin' is not declared"):
            promote(
                registry,
                moves=[("digits:1", "staging"), ("digits:1", "stagin")],
                actor="bob",
                reason="r",
                gates=load_config([]).registry.gates,
            )
        assert registry.store.get_version_by_number("digits", 1).aliases == ("candidate",)
    finally:
        registry.close()


# --- the operator API under uvicorn ----------------------------------------------------------------
@dataclass
class Coordinator:
    url: str
    tokens: dict[str, str]
    registry: Registry


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    api, tokens = operator_app(CoordinatorSettings(registry=config))
    registry: Registry = api.state.registry
    _seed(registry)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, name="uvicorn-aliases", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Coordinator(f"http://127.0.0.1:{port}/api/v1/registry", tokens, registry)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _post(c: Coordinator, path: str, role: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(c.url + path, json=body, headers={"Authorization": f"Bearer {c.tokens[role]}"})


def test_api_refuses_a_typo_and_only_an_admin_declares(coordinator: Coordinator) -> None:
    move = {"moves": [{"version": "digits:1", "alias": "prodcution"}], "reason": "r"}

    typo = _post(coordinator, "/promotions", "operator", move)
    approval = _post(coordinator, "/versions/digits:1/approvals", "operator", {"alias": "prodcution"})
    by_operator = _post(coordinator, "/aliases", "operator", {"alias": "prodcution", "reason": "r"})
    by_viewer = _post(coordinator, "/aliases", "viewer", {"alias": "prodcution", "reason": "r"})
    malformed = _post(coordinator, "/aliases", "admin", {"alias": "Prod uction", "reason": "r"})
    by_admin = _post(coordinator, "/aliases", "admin", {"alias": "prodcution", "reason": "as named by ops"})
    again = _post(coordinator, "/aliases", "admin", {"alias": "prodcution", "reason": "r"})
    listed = httpx.get(
        coordinator.url + "/aliases", headers={"Authorization": f"Bearer {coordinator.tokens['viewer']}"}
    )
    moved = _post(coordinator, "/promotions", "operator", move)

    assert typo.status_code == 422
    assert typo.json()["error"] == {
        "code": "undeclared_alias",
        "message": f"alias 'prodcution' is not declared; declared aliases: {DECLARED} "
        "(an admin may declare one with `fedge registry aliases add NAME`)",
    }
    assert approval.status_code == 422 and approval.json()["error"]["code"] == "undeclared_alias"
    assert by_operator.status_code == 403 and by_viewer.status_code == 403
    assert malformed.status_code == 422
    assert by_admin.status_code == 201
    assert by_admin.json() == {"aliases": ["candidate", "prodcution", "production", "staging"]}
    assert again.status_code == 409
    assert listed.json()["aliases"] == by_admin.json()["aliases"]
    assert moved.status_code == 200 and "prodcution" in moved.json()[0]["aliases"]
    assert _actions(coordinator.registry) == [
        ("alias.refused", "operator-1", "digits:1"),
        ("alias.refused", "operator-1", "digits:1"),
        ("alias.declared", "admin-1", "prodcution"),
    ]


def test_cli_through_the_api_declares_with_an_admin_token_only(coordinator: Coordinator) -> None:
    base = coordinator.url.removesuffix("/api/v1/registry")
    cwd = Path.cwd()

    refused = run_fedge(
        "registry",
        "aliases",
        "add",
        "canary",
        "--reason",
        "r",
        "--url",
        base,
        "--token",
        coordinator.tokens["operator"],
        cwd=cwd,
    )
    added = run_fedge(
        "registry",
        "aliases",
        "add",
        "canary",
        "--reason",
        "r",
        "--url",
        base,
        "--token",
        coordinator.tokens["admin"],
        cwd=cwd,
    )

    assert refused.returncode == 1 and "this needs 'admin' or higher (HTTP 403)" in refused.stderr
    assert added.returncode == 0, added.stderr
    assert "declared canary" in added.stdout
    assert ("alias.declared", "admin-1", "canary") in _actions(coordinator.registry)
