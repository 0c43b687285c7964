"""`fedge runs` and `fedge nodes` against the real operator API served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from coordinator.api import CoordinatorSettings
from fedge.cli.main import app as cli
from fedge.processes import free_port
from fedge.tls import generate_node_keypair
from registry import Registry, RegistryConfig, RunCreate
from tests.apps import operator_app


@dataclass
class Coordinator:
    url: str
    tokens: dict[str, str]
    registry: Registry


# --- factories ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """The real app under uvicorn (plain HTTP, no deployment) in a background thread."""
    root = tmp_path_factory.mktemp("coordinator")
    config = RegistryConfig(root=str(root / "reg"))
    api, tokens = operator_app(CoordinatorSettings(registry=config))
    registry: Registry = api.state.registry
    registry.store.create_run(
        RunCreate(
            run_id="run-cli-1",
            task="digits",
            strategy="fedavg",
            num_rounds=4,
            config={},
            config_hash="0" * 64,
            reason="nightly",
        )
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Coordinator(f"http://127.0.0.1:{port}", tokens, registry)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop"


def fedge(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process with no FEDGE_* variables from the environment."""
    runner = CliRunner()
    env = {"FEDGE_URL": None, "FEDGE_TOKEN": None, "FEDGE_CA": None}
    result = runner.invoke(cli, list(args), env=env)  # type: ignore[arg-type]
    return result.exit_code, result.stdout, result.stderr


# --- tests ----------------------------------------------------------------------------------------
def test_runs_list_prints_each_run(coordinator: Coordinator) -> None:
    code, out, err = fedge(
        "runs", "list", "--url", coordinator.url, "--token", coordinator.tokens["viewer"], "--json"
    )

    assert code == 0, err
    [run] = json.loads(out)
    assert (run["run_id"], run["status"], run["rounds_done"], run["num_rounds"], run["reason"]) == (
        "run-cli-1",
        "pending",
        0,
        4,
        "nightly",
    )


def test_runs_show_prints_the_run_as_json(coordinator: Coordinator) -> None:
    code, out, err = fedge(
        "runs", "show", "run-cli-1", "--url", coordinator.url, "--token", coordinator.tokens["viewer"]
    )

    assert code == 0, err
    shown = json.loads(out)
    assert shown["run_id"] == "run-cli-1" and shown["num_rounds"] == 4 and shown["rounds"] == []


def test_runs_show_of_an_unknown_run_is_an_error_line(coordinator: Coordinator) -> None:
    code, out, err = fedge(
        "runs", "show", "no-such-run", "--url", coordinator.url, "--token", coordinator.tokens["viewer"]
    )

    assert code == 1 and out == ""
    assert "no-such-run" in err and "HTTP 404" in err


def test_runs_create_with_an_unknown_key_fails_naming_it(coordinator: Coordinator) -> None:
    code, out, err = fedge(
        "runs",
        "create",
        "strategy.nope=1",
        "--url",
        coordinator.url,
        "--token",
        coordinator.tokens["operator"],
    )

    assert code == 2 and out == "", "the API's ConfigError is a ConfigError here too (exit 2)"
    assert "strategy.nope" in err and "HTTP 422" in err and "config_invalid" in err
    assert [r.run_id for r in coordinator.registry.store.list_runs(limit=10)] == ["run-cli-1"]


def test_runs_create_without_a_deployment_says_how_to_start_one(coordinator: Coordinator) -> None:
    code, _, err = fedge(
        "runs", "create", "--url", coordinator.url, "--token", coordinator.tokens["operator"]
    )

    assert code != 0
    assert "HTTP 409" in err and "fedge coordinator serve --tls-dir" in err


def test_no_token_fails_before_any_request(coordinator: Coordinator) -> None:
    code, out, err = fedge("runs", "list", "--url", coordinator.url)

    assert code != 0 and out == ""
    assert "FEDGE_TOKEN" in err and "unauthenticated" in err


def test_the_token_can_come_from_the_environment(coordinator: Coordinator) -> None:
    result = CliRunner().invoke(
        cli,
        ["runs", "list"],
        env={"FEDGE_URL": coordinator.url, "FEDGE_TOKEN": coordinator.tokens["viewer"], "FEDGE_CA": None},
    )

    assert result.exit_code == 0, result.stderr
    assert "run-cli-1" in result.stdout


def test_a_wrong_token_fails_with_the_servers_401(coordinator: Coordinator) -> None:
    code, out, err = fedge("runs", "list", "--url", coordinator.url, "--token", "fedge_not-a-real-token")

    assert code != 0 and out == ""
    assert "unknown or revoked" in err and "HTTP 401" in err


def test_a_viewer_cannot_stop_a_run(coordinator: Coordinator) -> None:
    code, _, err = fedge(
        "runs", "stop", "run-cli-1", "--url", coordinator.url, "--token", coordinator.tokens["viewer"]
    )

    assert code != 0
    assert "HTTP 403" in err and "this needs 'operator'" in err


def test_nodes_add_with_a_private_key_fails_locally(coordinator: Coordinator, tmp_path: Path) -> None:
    private_path, _ = generate_node_keypair(tmp_path, "hospital-a")
    audit_before = len(coordinator.registry.store.list_audit())

    # An unreachable URL proves no request is made: the refusal comes from the key check.
    code, out, err = fedge(
        "nodes",
        "add",
        str(private_path),
        "--name",
        "hospital-a",
        "--url",
        "http://127.0.0.1:9",
        "--token",
        coordinator.tokens["admin"],
    )

    assert code == 2 and out == ""
    assert "PRIVATE key" in err and str(private_path) in err and "cannot reach" not in err
    assert len(coordinator.registry.store.list_audit()) == audit_before


def test_nodes_list_without_a_deployment_is_a_409_line(coordinator: Coordinator) -> None:
    code, _, err = fedge("nodes", "list", "--url", coordinator.url, "--token", coordinator.tokens["viewer"])

    assert code == 1
    assert "HTTP 409" in err and "conflict" in err and "--tls-dir" in err


def test_an_unreachable_coordinator_is_named(coordinator: Coordinator) -> None:
    code, _, err = fedge(
        "runs", "list", "--url", "http://127.0.0.1:9", "--token", coordinator.tokens["viewer"]
    )

    assert code == 1
    assert "cannot reach the coordinator at http://127.0.0.1:9" in err
