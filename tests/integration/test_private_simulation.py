"""A real ``fedge simulate`` listens on loopback only (SuperLink, simulation engine, Ray) and leaves
its state private: folders 0700, databases 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

FEDGE = str(Path(sys.executable).parent / "fedge")
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _listening(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket in ``root``'s process tree."""
    found: set[tuple[str, str, int]] = set()
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((name, conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_simulate_binds_every_service_to_loopback_and_keeps_state_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o002)  # the loosest common umask: fedge must not rely on the caller's
    try:
        proc = subprocess.Popen(
            [
                FEDGE,
                "simulate",
                "strategy.num_rounds=1",
                "simulation.num_clients=2",
                f"registry.root={tmp_path / '.fedge'}",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1"},
        )
    finally:
        os.umask(old_umask)
    root = psutil.Process(proc.pid)
    sockets: set[tuple[str, str, int]] = set()
    deadline = time.monotonic() + 400
    while proc.poll() is None and time.monotonic() < deadline:
        sockets |= _listening(root)
        time.sleep(0.3)
    if proc.poll() is None:
        proc.kill()
    output = proc.communicate()[0]

    assert proc.returncode == 0, output[-3000:]
    names = {name for name, _, _ in sockets}
    assert any(n.startswith("flower-superli") for n in names), sockets  # the sampling saw the services
    assert any("gcs_server" in n or "raylet" in n for n in names), sockets  # and Ray's
    exposed = sorted(s for s in sockets if s[1] not in LOOPBACK)
    assert exposed == [], f"listening beyond loopback: {exposed}"

    state = tmp_path / ".fedge"
    folders = [state, *(p for p in state.rglob("*") if p.is_dir() and "sha256" not in p.parts)]
    databases = [p for p in state.rglob("*") if p.is_file() and ".db" in p.name]
    assert {"runs", "artifacts", "keys"} <= {p.name for p in folders}
    assert any(p.name == "superlink" for p in folders), [str(p) for p in folders]
    wide = [f"{p} {stat.S_IMODE(p.stat().st_mode):o}" for p in folders if p.stat().st_mode & 0o077]
    assert wide == []
    assert {p.name for p in databases} >= {"registry.db"}  # the SuperLink keeps its state in memory
    wide_files = [f"{p} {stat.S_IMODE(p.stat().st_mode):o}" for p in databases if p.stat().st_mode & 0o077]
    assert wide_files == []
    assert stat.S_IMODE((state / "keys" / "signing-key.pem").stat().st_mode) == 0o600
