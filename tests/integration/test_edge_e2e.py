"""``fedge edge run`` as a real process against a real coordinator process, both on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from coordinator.auth import TokenStore
from fedge.crypto import generate_private_key, save_public_key
from registry import RegistryConfig, open_registry
from tests.edge.test_agent import NAME, Coordinator, build_models
from tests.processes import interrupt_and_wait, processes_under

pytestmark = pytest.mark.slow

COORDINATOR = (
    "import sys, uvicorn\n"
    "from coordinator.api import CoordinatorSettings, create_app\n"
    "from registry import RegistryConfig\n"
    "app = create_app(CoordinatorSettings(registry=RegistryConfig(root=sys.argv[1])))\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')\n"
)


def edge_command() -> list[str]:
    """``fedge edge`` once the main CLI registers it; the edge app itself until then."""
    from fedge.cli.main import app

    if any(group.name == "edge" for group in app.registered_groups):
        return [str(Path(sys.executable).parent / "fedge"), "edge"]
    return [sys.executable, "-c", "from fedge.cli.edge_cmd import edge_app; edge_app(prog_name='fedge edge')"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, *, timeout: float = 60, status: int = 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == status:
                return response
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer {status} within {timeout}s")
        time.sleep(0.2)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FLWR_HOME": str(tmp_path / "flwr"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def coordinator(tmp_path: Path, env: dict[str, str]) -> Iterator[Coordinator]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    registry = open_registry(config)
    tokens = TokenStore.from_url(config.resolved_database_url())
    _, token = tokens.create(name="dashboard", role="viewer")
    tokens.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, config.root, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "coordinator.log", "wb"),  # noqa: SIM115
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        yield Coordinator(
            f"http://127.0.0.1:{port}", token, registry, generate_private_key(), build_models(),
            config.resolved_database_url(),
        )  # fmt: skip
    finally:
        interrupt_and_wait(proc)
        registry.close()


def test_edge_run_serves_switches_on_promotion_and_stops_cleanly(
    coordinator: Coordinator, tmp_path: Path, env: dict[str, str]
) -> None:
    v1 = coordinator.release(0)
    key_path = save_public_key(coordinator.key.public_key(), tmp_path / "release.pub.pem")
    port = free_port()
    log_path = tmp_path / "edge.log"
    edge = subprocess.Popen(
        [
            *edge_command(), "run", "--registry", coordinator.url, "--name", NAME, "--alias", "production",
            "--public-key", str(key_path), "--dir", str(tmp_path / "state"), "--port", str(port),
            "--poll-interval", "0.5", "--report-interval", "1", "--device-name", "e2e-device",
        ],
        env={**env, "FEDGE_TOKEN": coordinator.device_token("e2e-device")},
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "wb"),  # noqa: SIM115
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    rows = {"rows": coordinator.models.rows[:3].tolist()}
    try:
        wait_for(f"{base}/healthz")
        first = httpx.post(f"{base}/v1/predict", json=rows).json()
        assert first["version"] == f"{NAME}:{v1.number}"

        v2 = coordinator.release(1)
        deadline = time.monotonic() + 30
        failures, version = 0, first["version"]
        while version != f"{NAME}:{v2.number}":
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            response = httpx.post(f"{base}/v1/predict", json=rows)
            failures += response.status_code != 200
            version = response.json().get("version", version)
        assert failures == 0
        model = httpx.get(f"{base}/v1/model").json()
        assert model["agent"]["active"] == f"{NAME}:{v2.number}"
        assert model["agent"]["previous"] == f"{NAME}:{v1.number}"
    finally:
        code = interrupt_and_wait(edge)

    assert code == 0, log_path.read_text()[-2000:]
    assert not processes_under(tmp_path / "state")
    status = subprocess.run(
        [*edge_command(), "status", "--dir", str(tmp_path / "state")],
        capture_output=True,
        env=env,
        check=True,
    )
    assert f'"active": "{NAME}:{v2.number}"' in status.stdout.decode()
    rolled = subprocess.run(
        [*edge_command(), "rollback", "--dir", str(tmp_path / "state")],
        capture_output=True,
        env=env,
        check=True,
    )
    assert f"to {NAME}:{v1.number}" in rolled.stdout.decode()


def test_edge_run_reports_and_pushes_drift_under_its_device_token_only(
    coordinator: Coordinator, tmp_path: Path, env: dict[str, str]
) -> None:
    """A real ``fedge edge run`` with a device token for cam-17 (and ``--device-name`` saying otherwise):
    its report and its noisy drift window are filed under cam-17, by the token's name."""
    from coordinator.drift.reference import manifest_entry
    from fedge.drift import fixed_bin_edges, histogram_counts
    from fedge.drift_summary import DriftReference

    rows = coordinator.models.rows
    features = [19, 20, 27, 28]
    edges = fixed_bin_edges(np.zeros(4), np.ones(4), 5)
    reference = DriftReference(
        NAME, 1, features, [f"p{i}" for i in features], edges,
        histogram_counts(rows[:, features], edges).astype(float), None, 1.0, 3,
    )  # fmt: skip
    version = coordinator.release(
        0, drift={"manifest": manifest_entry(reference), "reference": reference.to_dict()}
    )
    key_path = save_public_key(coordinator.key.public_key(), tmp_path / "release.pub.pem")
    port = free_port()
    log_path = tmp_path / "edge.log"
    edge = subprocess.Popen(
        [
            *edge_command(), "run", "--registry", coordinator.url, "--name", NAME, "--alias", "production",
            "--public-key", str(key_path), "--dir", str(tmp_path / "state"), "--port", str(port),
            "--poll-interval", "0.5", "--report-interval", "1", "--device-name", "not-cam-17",
            "--drift-epsilon", "1",
        ],
        env={**env, "FEDGE_TOKEN": coordinator.device_token("cam-17")},
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "wb"),  # noqa: SIM115
    )  # fmt: skip
    viewer = {"Authorization": f"Bearer {coordinator.token}"}
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/healthz")
        served = np.tile(rows, (4, 1))  # 256 rows in one request (one window) >= drift.min_window 200
        assert httpx.post(f"{base}/v1/predict", json={"rows": served.tolist()}).status_code == 200
        deadline = time.monotonic() + 30
        reports: list[dict[str, Any]] = []
        while not reports:
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.5)
            reports = httpx.get(
                f"{coordinator.url}/api/v1/drift/reports",
                params={"model": NAME, "version": version.number},
                headers=viewer,
            ).json()
        devices = httpx.get(f"{coordinator.url}/api/v1/edge/devices", headers=viewer).json()
    finally:
        code = interrupt_and_wait(edge)

    assert code == 0, log_path.read_text()[-2000:]
    assert reports[0]["sites"] == ["cam-17"] and reports[0]["window_rows"] == 256
    assert [(d["device"], d["reported_by"]) for d in devices] == [("cam-17", "device-cam-17")]
