"""The client agent as real processes, in both node modes: it says when the SuperLink cannot be
reached, a ``--node supernode`` agent's SuperNode dies with it (an in-process node starts no Flower
process at all), and a node revoked while connected exits 4 with the refusal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from client.agent import EXIT_REFUSED
from fedge.process_guard import GRACE_S
from fedge.processes import free_port, stop_process_tree
from fedge.tls import generate_node_keypair, init_federation_tls
from simulations.local_deployment import LocalDeployment
from tests.processes import processes_under

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _flower_processes_under(root: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        flower = any(os.path.basename(c).startswith(("flower-", "flwr-")) for c in cmd[:2])
        if flower and (str(root) in " ".join(cmd) or _flwr_home_under(proc, root)):
            found.append(proc)
    return found


def _flwr_home_under(proc: psutil.Process, root: Path) -> bool:
    try:
        return proc.environ().get("FLWR_HOME", "").startswith(str(root))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("mode", ["in-process", "supernode"])
def test_an_unreachable_superlink_is_said_on_the_console_and_a_sigkilled_agent_leaves_no_flower_process(
    tmp_path: Path, mode: str
) -> None:
    tls = init_federation_tls(tmp_path / "tls", ["localhost"])
    key, _ = generate_node_keypair(tmp_path / "keys", "a")
    data = tmp_path / "site.csv"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedge.cli.main",
            "client",
            "example-data",
            "--task",
            "digits",
            "--out",
            str(data),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    agent = subprocess.Popen(
        [
            sys.executable, "-m", "fedge.cli.main", "client", "start", "--coordinator", nobody,
            "--ca", str(tls.ca_cert), "--key", str(key), "--data", str(data),
            "--state-dir", str(tmp_path / "state"), "--node", mode, "task=digits",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert agent.stderr is not None
        said = []
        while not any("cannot reach the SuperLink" in line for line in said):
            line = agent.stderr.readline()
            assert line, f"the agent exited ({agent.poll()}) without saying so: {''.join(said)}"
            said.append(line)
        assert f"cannot reach the SuperLink at {nobody}; retrying in" in said[-1]
        assert agent.poll() is None, "the agent keeps retrying"
        children = _flower_processes_under(tmp_path)
        if mode == "supernode":
            assert any("flower-supernode" in " ".join(p.cmdline()[:2]) for p in children)
        else:  # the agent holds the connection itself
            assert children == []

        agent.send_signal(signal.SIGKILL)  # no cleanup runs in the agent
        agent.wait(timeout=10)

        assert _wait(lambda: all(_gone(p) for p in children), 10), "Flower processes outlived the agent"
    finally:
        agent.kill()
        agent.wait(timeout=10)
        for proc in _flower_processes_under(tmp_path):
            stop_process_tree(proc.pid)
    # The SuperNode's process guard outlives it by as long as it takes to stop what the SuperNode
    # started (SIGTERM, then SIGKILL after its grace): bounded, not instant.
    assert _wait(lambda: processes_under(tmp_path) == [], GRACE_S * 2 + 5), processes_under(tmp_path)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["in-process", "supernode"])
def test_a_node_revoked_while_connected_exits_4_with_the_refusal(
    tmp_path_factory: pytest.TempPathFactory, mode: str
) -> None:
    tmp_path = tmp_path_factory.mktemp("rv")  # short: the worker's Unix socket lives below it
    with LocalDeployment(tmp_path / "dep") as dep:
        key, data = dep.institution("hospital-a")
        assert dep.enroll("hospital-a").status_code == 201
        agent = dep.start_agent("hospital-a", key, data, node_mode=mode)
        dep.wait_online(["hospital-a"])
        assert _wait(lambda: "connected to the SuperLink" in agent.output(), 30), agent.output()

        assert dep.api("DELETE", "/nodes/hospital-a").status_code == 200

        code = agent.wait(timeout=120)
        output = agent.output()
        assert code == EXIT_REFUSED, output[-2000:]
        assert "error [node_refused]: the coordinator refused this node's key" in output
        if mode == "supernode":  # Flower's SuperNode exits 0 when revoked: the agent asks again
            assert "stopped without being asked" in output
    assert processes_under(tmp_path) == []
