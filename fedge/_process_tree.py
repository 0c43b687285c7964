"""Stopping a process with every descendant it started, and reading the end of a log."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path

import psutil

__all__ = ["descendants", "log_tail", "open_private_log", "stop_process_tree", "stop_processes"]

# Enough bytes for the last lines of any log fedge shows in an error message.
_TAIL_BYTES = 64 * 1024


def descendants(roots: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Every live descendant of ``roots`` (recursive), without duplicates."""
    found: dict[psutil.Process, None] = {}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            found.update(dict.fromkeys(root.children(recursive=True)))
    return list(found)


def _send(procs: Iterable[psutil.Process], signum: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signum)


def stop_processes(procs: list[psutil.Process], *, timeout: float) -> None:
    """SIGTERM ``procs``, wait up to ``timeout`` seconds, then SIGKILL what is left.

    A process may have forked after the first sweep: the children of the survivors are collected
    again before the kill.
    """
    if not procs:
        return
    _send(procs, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    if not alive:
        return
    alive = list(dict.fromkeys([*alive, *descendants(alive)]))
    _send(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def stop_process_tree(pid: int, *, timeout: float = 10.0) -> list[int]:
    """Terminate ``pid`` and every descendant (SIGTERM, then SIGKILL after ``timeout``).

    Descendants are collected before the parent is signalled, so that processes reparented on
    its death (Ray's workers, the SuperExec) are still found. Returns the pids signalled.
    """
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    procs = [*descendants([root]), root]
    stop_processes(procs, timeout=timeout)
    return [p.pid for p in procs]


def open_private_log(path: Path) -> int:
    """Open ``path`` for appending, readable by its owner only (0600); return the descriptor.

    Logs of Flower processes name nodes, runs and file paths: state on disk stays private.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # a log left by an older version may be wider
    return fd


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of the log at ``path`` (``"(no log)"`` if it cannot be read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - _TAIL_BYTES))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
