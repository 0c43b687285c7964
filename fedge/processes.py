"""Processes fedge starts: :class:`ManagedProcess`, free ports, the Flower environment, tree stops.

Shared by the coordinator (its SuperLink), the client agent (its SuperNode) and the local
deployment harness (a coordinator and client agents); nothing here starts a server by itself.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fedge._managed_process import ManagedProcess
from fedge._process_tree import log_tail, stop_process_tree

__all__ = ["ManagedProcess", "flower_env", "free_port", "log_tail", "stop_process_tree"]


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
            # A message's objects (one per array and record) travel one HTTPS request each: 8 at a
            # time rather than Flower's 2 (the ServerApp's pushes and pulls of a round).
            "FLWR_PRIVATE_MAX_CONCURRENT_OBJ_PUSHES": os.environ.get(
                "FLWR_PRIVATE_MAX_CONCURRENT_OBJ_PUSHES", "8"
            ),
            "FLWR_PRIVATE_MAX_CONCURRENT_OBJ_PULLS": os.environ.get(
                "FLWR_PRIVATE_MAX_CONCURRENT_OBJ_PULLS", "8"
            ),
        }
    )
    return env
