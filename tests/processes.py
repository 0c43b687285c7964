"""Find processes that a test's fedge run started (by their private FLWR_HOME or their paths)."""

from __future__ import annotations

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
