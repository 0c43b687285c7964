"""Processes fedge starts: free ports, the Flower environment, and stopping a whole process tree.

Shared by the coordinator (its SuperLink) and the client agent (its SuperNode); nothing here
starts a server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import psutil

__all__ = ["flower_env", "free_port", "stop_process_tree"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def flower_env(flwr_home: Path) -> dict[str, str]:
    """The environment of every Flower process fedge starts: private home, no telemetry.

    Runtime dependency installation is disabled too: it would ``uv sync`` the app per run and
    pull packages (a CUDA torch) that an institution did not review.
    """
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DEDUP_LOGS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def stop_process_tree(pid: int, *, timeout: float = 10.0) -> list[int]:
    """Terminate ``pid`` and every descendant (SIGTERM, then SIGKILL after ``timeout``).

    Descendants are collected before the parent is signalled, so that processes reparented on
    its death (Ray's workers, the SuperExec) are still found. Returns the pids signalled.
    """
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    # A child may have forked after the first sweep; look again before killing.
    for proc in list(alive):
        with contextlib.suppress(psutil.NoSuchProcess):
            alive.extend(c for c in proc.children(recursive=True) if c not in alive)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in procs]
