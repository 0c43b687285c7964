"""A real Prometheus, with deploy/prometheus/prometheus.yml, scrapes a real ``fedge coordinator serve``
(bearer token from a file) and a real ``fedge edge run``; its query API returns fedge's series."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import RegistryConfig
from tests.apps import role_tokens
from tests.deploy.conftest import scrape_config
from tests.edge.test_edge_run_process import _free_port, device  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 90.0


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_until(what: str, procs: list[subprocess.Popen[bytes]], logs: list[Path], check) -> object:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, f"{proc.args[:4]} exited: {log.read_text()[-2000:]}"
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.25)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in logs)
    raise AssertionError(f"{what} within {DEADLINE_S}s\n{tails}")


@pytest.fixture
def stack(
    tmp_path: Path,
    prometheus: str,
    device: tuple[Path, Path, list[list[float]]],  # noqa: F811
) -> Iterator[tuple[str, list[subprocess.Popen[bytes]], list[Path]]]:
    state, public, _ = device
    coordinator_port, edge_port, prometheus_port = _free_port(), _free_port(), _free_port()
    root = tmp_path / "reg"
    logs = [tmp_path / "coordinator.log", tmp_path / "edge.log", tmp_path / "prometheus.log"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_start(
            [sys.executable, "-m", "fedge.cli.main", "coordinator", "serve",
             "--port", str(coordinator_port), f"registry.root={root}"],
            logs[0],
        ))  # fmt: skip
        _wait_until(
            "the coordinator did not answer", procs, logs[:1],
            lambda: _get(f"http://127.0.0.1:{coordinator_port}/healthz")[0] == 200,
        )  # fmt: skip
        viewer = role_tokens(RegistryConfig(root=str(root)).resolved_database_url())["viewer"]
        procs.append(_start(
            [sys.executable, "-m", "fedge.cli.main", "edge", "run",
             "--registry", f"http://127.0.0.1:{coordinator_port}", "--public-key", str(public),
             "--dir", str(state), "--port", str(edge_port), "--poll-interval", "5"],
            logs[1],
        ))  # fmt: skip
        config = scrape_config(
            tmp_path,
            coordinator=f"127.0.0.1:{coordinator_port}",
            edge=f"127.0.0.1:{edge_port}",
            token=viewer,
            interval="1s",
        )
        procs.append(_start(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            logs[2],
        ))  # fmt: skip
        yield f"http://127.0.0.1:{prometheus_port}", procs, logs
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _query(base: str, promql: str) -> list[dict]:
    status, body = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if status != 200:
        return []
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def test_prometheus_scrapes_the_coordinator_with_its_token_and_the_edge(
    stack: tuple[str, list[subprocess.Popen[bytes]], list[Path]],
) -> None:
    base, procs, logs = stack

    registry_up = _wait_until(
        "no fedge_registry_up from the coordinator", procs, logs,
        lambda: _query(base, 'fedge_registry_up{job="fedge-coordinator"}'),
    )  # fmt: skip
    model_info = _wait_until(
        "no fedge_serving_model_info from the edge", procs, logs,
        lambda: _query(base, 'fedge_serving_model_info{job="fedge-edge"}'),
    )  # fmt: skip
    targets = json.loads(_get(f"{base}/api/v1/targets")[1])["data"]["activeTargets"]

    assert registry_up[0]["value"][1] == "1"  # the token file was sent: a 401 yields no series
    assert model_info[0]["metric"]["version"] == "digits:1"
    assert model_info[0]["metric"]["device"] == "edge-1"
    assert {t["labels"]["job"]: t["health"] for t in targets} == {
        "fedge-coordinator": "up",
        "fedge-edge": "up",
    }
    assert _query(base, 'fedge_runs{job="fedge-coordinator", status="failed"}')[0]["value"][1] == "0"
