"""Every list command against a real registry or a real operator API, with names too long for 80
columns: a header row, every line within 80 columns (long cells wrapped, low-priority columns
dropped), no ANSI codes when piped, and ``--json`` carrying the same rows."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from coordinator.api import CoordinatorSettings
from coordinator.auth import TokenStore
from fedge.cli.main import app as cli
from fedge.processes import free_port
from registry import (
    ModelVersionCreate,
    Registry,
    RegistryConfig,
    RunCreate,
    WebhookDeliveryStore,
    open_registry,
)
from tests.apps import device_token, operator_app

ROOT = Path(__file__).resolve().parents[2]
MODEL = "chest-xray-classifier-for-the-northern-hospitals-consortium"  # 59 characters
RUNS = [f"{MODEL}-run-{i}" for i in (1, 2)]
LONG_REASON = "weekly retraining after the drift alarm on the radiology scanners of site b"
DEVICE = "camera-at-the-far-end-of-the-north-loading-dock-number-17"
RECEIVER = "https://hooks.example.org/fedge/registry-events/a-receiver-path-that-never-ends"
WIDTH = 80
# Whatever a terminal's or a test runner's environment says: none of it applies to a pipe.
CLEAN_ENV = {"COLUMNS": None, "NO_COLOR": None, "TERM": None, "FEDGE_URL": None, "FEDGE_TOKEN": None,
             "FEDGE_CA": None}  # fmt: skip


# --- reading a table back ---------------------------------------------------------------------------
def table_columns(out: str) -> dict[str, str]:
    """Each column's text, top to bottom, blanks removed (a wrapped cell reads back whole).

    The header row is the line above the rule of dashes; a column spans from its header's first
    character to the next header's.
    """
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", "\u2500"})
    headers = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[rule - 1])]
    body = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        body.append(line)
    columns = {}
    for k, (start, name) in enumerate(headers):
        end = headers[k + 1][0] if k + 1 < len(headers) else None
        columns[name] = "".join(re.sub(r"\s", "", line[start:end]) for line in body)
    return columns


def joined(values: list[object]) -> str:
    return "".join(re.sub(r"\s", "", "-" if v is None else str(v)) for v in values)


def assert_fits(out: str, *, width: int = WIDTH) -> None:
    assert "\x1b[" not in out, "ANSI codes in piped output"
    too_wide = [line for line in out.splitlines() if len(line) > width]
    assert not too_wide, f"lines wider than {width}: {too_wide}"


def fedge(*args: str, env: dict[str, str | None] | None = None) -> tuple[str, str]:
    """The CLI in-process (stdout is not a terminal); fails the test on a non-zero exit."""
    result = CliRunner().invoke(cli, list(args), env={**CLEAN_ENV, **(env or {})})  # type: ignore[dict-item]
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout, result.stderr


def table_and_json(*args: str) -> tuple[dict[str, str], object]:
    """The command's table (checked to fit 80 columns) read back by column, and its --json."""
    table, _ = fedge(*args)
    assert_fits(table)
    as_json, _ = fedge(*args, "--json")
    return table_columns(table), json.loads(as_json)


# --- a registry with long names -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("tables") / "reg"
    config = RegistryConfig(root=str(root))
    registry = open_registry(config)
    try:
        for run_id in RUNS:
            registry.store.create_run(
                RunCreate(run_id=run_id, task="digits", strategy="fedprox", num_rounds=5, config={},
                          config_hash="0" * 64, reason=LONG_REASON)
            )  # fmt: skip
            registry.register_version(
                ModelVersionCreate(
                    name=MODEL, run_id=run_id, checkpoint_id=None,
                    artifacts=(registry.put_artifact("onnx", f"bytes of {run_id}".encode()),),
                    metrics={"central-accuracy": 0.9512, "onnx-parity-max-abs-diff": 1e-6},
                    lineage={}, model_config={},
                ),
                aliases=("candidate",),
            )  # fmt: skip
        registry.store.append_audit(
            action="alias.refused", actor="operator-on-the-night-shift-at-the-northern-hub",
            subject=f"{MODEL}:2", details={"alias": "production", "why": LONG_REASON},
        )  # fmt: skip
    finally:
        registry.close()
    tokens = TokenStore.from_url(config.resolved_database_url())
    try:
        tokens.create(name="grafana-dashboard-of-the-radiology-department-at-site-b", role="viewer")
        tokens.create(name="cam", role="device", device=DEVICE)
    finally:
        tokens.close()
    deliveries = WebhookDeliveryStore.from_url(config.resolved_database_url())
    try:
        deliveries.record(
            "d-1", event="version_registered", url=RECEIVER, status="failed", attempts=5, status_code=500,
            last_error="HTTP 500 from the receiver: " + LONG_REASON,
        )  # fmt: skip
    finally:
        deliveries.close()
    yield root


def test_registry_list_fits_and_json_carries_the_same_versions(registry_root: Path) -> None:
    columns, rows = table_and_json("registry", "list", "--root", str(registry_root))

    assert isinstance(rows, list) and len(rows) == 2
    assert {"id", "version", "aliases"} <= set(columns), "the priority-1 and -2 columns stay at 80"
    assert "onnx parity" not in columns, "the lowest-priority column goes first"
    assert columns["version"] == joined([f"{r['name']}:{r['number']}" for r in rows])
    assert columns["id"] == joined([r["id"] for r in rows])
    assert columns["aliases"] == joined([", ".join(r["aliases"]) or None for r in rows])


def test_a_wide_terminal_shows_every_column(registry_root: Path) -> None:
    out, _ = fedge("registry", "list", "--root", str(registry_root), env={"COLUMNS": "250"})

    columns = table_columns(out)
    assert list(columns) == ["id", "version", "aliases", "run", "accuracy", "onnx parity", "created"]
    assert columns["accuracy"] == "0.95120.9512"
    assert all(len(line) <= 250 for line in out.splitlines())


def test_registry_runs_fits_and_json_carries_the_same_runs(registry_root: Path) -> None:
    columns, rows = table_and_json("registry", "runs", "--root", str(registry_root))

    assert isinstance(rows, list) and sorted(r["run_id"] for r in rows) == sorted(RUNS)
    assert columns["run"] == joined([r["run_id"] for r in rows])
    assert columns["status"] == joined([r["status"] for r in rows])
    assert all(r["checkpoints"] == 0 for r in rows)


def test_registry_aliases_list_has_a_header_and_json(registry_root: Path) -> None:
    columns, aliases = table_and_json("registry", "aliases", "list", "--root", str(registry_root))

    assert aliases == ["candidate", "production", "staging"]
    assert columns == {"alias": joined(aliases)}


def test_webhook_deliveries_fit_and_json_is_the_page(registry_root: Path) -> None:
    columns, page = table_and_json("registry", "webhooks", "deliveries", "--root", str(registry_root))

    assert isinstance(page, dict) and page["total"] == 1
    assert columns["event"] == "version_registered" and columns["status"] == "failed"
    assert columns["receiver"] == RECEIVER, "the long URL wraps and reads back whole"


def test_tokens_list_fits_and_json_carries_no_secret(registry_root: Path) -> None:
    columns, tokens = table_and_json("tokens", "list", "--root", str(registry_root))

    assert isinstance(tokens, list) and sorted(t["name"] for t in tokens) == [
        "cam",
        "grafana-dashboard-of-the-radiology-department-at-site-b",
    ]
    assert all(set(t) == {"id", "name", "role", "device", "created_at", "revoked_at"} for t in tokens)
    assert columns["name"] == joined([t["name"] for t in tokens])
    assert columns["role"] == joined(
        [f"{t['role']}:{t['device']}" if t["device"] else t["role"] for t in tokens]
    )
    assert columns["state"] == joined(["active"] * len(tokens))


def test_audit_list_fits_and_json_carries_the_entries(registry_root: Path) -> None:
    columns, entries = table_and_json("audit", "list", "--root", str(registry_root))

    assert isinstance(entries, list) and entries[-1]["action"] == "alias.refused"
    assert columns["seq"] == joined([e["seq"] for e in entries])
    assert columns["action"] == joined([e["action"] for e in entries])
    last, _ = fedge("audit", "list", "--root", str(registry_root), "--limit", "1", "--json")
    assert [e["seq"] for e in json.loads(last)] == [entries[-1]["seq"]]


def test_drift_status_has_a_header_with_no_reports(registry_root: Path) -> None:
    out, _ = fedge("drift", "status", "--root", str(registry_root))
    as_json, _ = fedge("drift", "status", "--root", str(registry_root), "--json")

    assert_fits(out)
    assert {"version", "flagged", "decision"} <= set(table_columns(out))
    assert "no drift reports yet" in out
    assert json.loads(as_json)["versions"] == []


def test_tasks_list_fits_and_json_carries_the_same_tasks() -> None:
    columns, tasks = table_and_json("tasks", "list")

    assert isinstance(tasks, list)
    assert columns["name"] == joined([t["name"] for t in tasks])
    assert columns["input"] == joined([t["input"] for t in tasks])


# --- the operator API: runs, devices, rollouts --------------------------------------------------------
@dataclass
class Coordinator:
    url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """The real app under uvicorn on 127.0.0.1 (no deployment), with runs and one device's report."""
    config = RegistryConfig(root=str(tmp_path_factory.mktemp("api") / "reg"))
    api, tokens = operator_app(CoordinatorSettings(registry=config))
    registry: Registry = api.state.registry
    for run_id in RUNS:
        registry.store.create_run(
            RunCreate(run_id=run_id, task="digits", strategy="fedavg", num_rounds=4, config={},
                      config_hash="0" * 64, reason=LONG_REASON)
        )  # fmt: skip
    device = device_token(config.resolved_database_url(), DEVICE)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, name="uvicorn-tables", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    posted = httpx.post(
        f"{url}/api/v1/edge/reports",
        json={"model": {"name": MODEL, "version": "2"}, "served": 1234, "health": {"status": "ok"}},
        headers={"Authorization": f"Bearer {device}"},
    )
    assert posted.status_code == 201, posted.text
    try:
        yield Coordinator(url, tokens)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_runs_list_fits_and_json_carries_the_same_runs(coordinator: Coordinator) -> None:
    columns, runs = table_and_json(
        "runs", "list", "--url", coordinator.url, "--token", coordinator.tokens["viewer"]
    )

    assert isinstance(runs, list) and sorted(r["run_id"] for r in runs) == sorted(RUNS)
    assert columns["run"] == joined([r["run_id"] for r in runs])
    assert columns["rounds"] == joined(["0/4", "0/4"])
    assert columns["reason"] == joined([LONG_REASON, LONG_REASON])


def test_edge_devices_fits_and_json_carries_the_report(coordinator: Coordinator) -> None:
    columns, devices = table_and_json(
        "edge", "devices", "--url", coordinator.url, "--token", coordinator.tokens["viewer"]
    )

    assert isinstance(devices, list) and [d["device"] for d in devices] == [DEVICE]
    assert columns["device"] == joined([DEVICE])
    assert columns["version"] == joined([f"{MODEL}:2"])
    assert columns["health"] == "ok"


def test_rollout_list_with_none_still_prints_its_header(coordinator: Coordinator) -> None:
    columns, rollouts = table_and_json(
        "registry", "rollout", "list", "--url", coordinator.url, "--token", coordinator.tokens["viewer"]
    )

    assert rollouts == []
    assert set(columns) >= {"id", "alias", "state"} and set(columns.values()) == {""}


# --- a pipe and a terminal, as separate processes ---------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "TERM", "FORCE_COLOR")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _in_a_terminal(args: list[str], **extra: str) -> str:
    """What ``fedge ARGS`` writes to a pseudo-terminal (stdout a tty)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedge.cli.main", *args], stdout=follower, stderr=subprocess.PIPE,
        env=_env(TERM="xterm-256color", **extra), cwd=ROOT,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_piped_output_has_no_ansi_codes_and_fits_80_columns(registry_root: Path) -> None:
    piped = subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "tokens", "list", "--root", str(registry_root)],
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120,
    )  # fmt: skip

    assert piped.returncode == 0, piped.stderr
    assert_fits(piped.stdout)
    assert "grafana-dashboard-of-the-radiology-department-at-site-b" in table_columns(piped.stdout)["name"]


def test_a_terminal_gets_a_bold_header_and_no_color_turns_it_off(registry_root: Path) -> None:
    args = ["tokens", "list", "--root", str(registry_root)]
    styled = _in_a_terminal(args, COLUMNS="60")
    plain = _in_a_terminal(args, COLUMNS="60", NO_COLOR="1")

    assert "\x1b[1m" in styled, "a terminal gets the bold header"
    assert all(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) <= 60 for line in styled.splitlines())
    assert_fits(plain, width=60)
    assert table_columns(plain)["name"] == table_columns(re.sub(r"\x1b\[[0-9;]*m", "", styled))["name"]


# --- fedge --version ------------------------------------------------------------------------------------
def test_version_prints_fedge_first_then_its_runtimes() -> None:
    from importlib.metadata import version

    out = subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "--version"],
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120,
    )  # fmt: skip

    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"fedge {version('fedge')}",
        f"flwr {version('flwr')}",
        f"torch {version('torch')}",
        f"onnxruntime {version('onnxruntime')}",
    ]


# --- nodes: a real deployment (coordinator and SuperLink processes) -----------------------------------
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nodes_list_fits_and_json_carries_the_enrolled_nodes(tmp_path: Path) -> None:
    from simulations.local_deployment import LocalDeployment

    names = ["radiology-department-of-the-northern-hospitals-consortium", "site-b"]
    with LocalDeployment(tmp_path / "deployment") as dep:
        for name in names:
            dep.institution(name)
            enrolled = dep.enroll(name)
            assert enrolled.status_code == 201, enrolled.text
        columns, nodes = table_and_json(
            "nodes", "list", "--url", dep.api_url, "--token", dep.tokens["viewer"],
            "--ca", str(dep.tls_dir / "ca.crt"),
        )  # fmt: skip

    assert isinstance(nodes, list) and sorted(n["name"] for n in nodes) == sorted(names)
    assert columns["name"] == joined([n["name"] for n in nodes])
    assert columns["state"] == joined([n["state"] for n in nodes])
    assert columns["key sha256"] == joined([n["key_sha256"][:16] for n in nodes])
