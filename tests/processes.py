"""Processes a test started: find the ones a fedge run left (by FLWR_HOME or path), stop a command."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import psutil


def processes_under(root: Path) -> list[str]:
    """Describe live processes whose FLWR_HOME or command line points inside ``root``."""
    root_s = str(root)
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            env_home = proc.environ().get("FLWR_HOME", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if env_home.startswith(root_s) or root_s in cmd:
            found.append(f"{proc.info['pid']} {proc.info['name']}: {cmd[:120]}")
    return found


def interrupt_and_wait(proc: subprocess.Popen[bytes], *, timeout: float = 30.0) -> int:
    """Stop a ``fedge`` command as Ctrl-C would and return its exit code (killed after ``timeout``)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return int(proc.returncode)
