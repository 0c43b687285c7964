"""The managed SuperLink: starts healthy on loopback, stops with every child."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from coordinator import ManagedSuperLink
from fedge.processes import flower_env, stop_process_tree
from tests.processes import processes_under


@pytest.mark.slow
def test_superlink_starts_healthy_and_stops_completely(tmp_path: Path) -> None:
    link = ManagedSuperLink(tmp_path / "sl", simulation=True)

    with link:
        pid = link.process.pid if link.process else -1
        assert link.healthy()
        assert link.address.startswith("127.0.0.1:")
        assert stat.S_IMODE(link.log_path.stat().st_mode) == 0o600

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not link.healthy()
    assert processes_under(tmp_path) == []


def test_stop_process_tree_kills_grandchildren_that_ignore_sigterm(tmp_path: Path) -> None:
    ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    child = ignore_term + "time.sleep(300)"
    script = (
        f"import subprocess, sys; {ignore_term}"
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    time.sleep(1.0)
    children = psutil.Process(parent.pid).children(recursive=True)
    assert children

    stop_process_tree(parent.pid, timeout=1.0)
    parent.wait(timeout=5)

    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)


def test_flower_env_is_private_and_quiet(tmp_path: Path) -> None:
    env = flower_env(tmp_path)

    assert env["FLWR_HOME"] == str(tmp_path)
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"


def test_a_superlink_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    from fedge.errors import FederationError

    link = ManagedSuperLink(tmp_path / "sl", extra_args=["--no-such-flag"], startup_timeout=30)

    with pytest.raises(FederationError, match="exited with code"):
        link.start()
    assert processes_under(tmp_path) == []
