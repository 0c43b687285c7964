"""The fedge version and, when running from a git checkout, its commit."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

__all__ = ["RUNTIME_DISTRIBUTIONS", "distribution_version", "fedge_version", "git_commit"]

# What `fedge --version` reports besides fedge: the libraries a model's behaviour depends on.
RUNTIME_DISTRIBUTIONS = ("flwr", "torch", "onnxruntime")


def fedge_version() -> str:
    """Return the installed distribution's version (``0+unknown`` when not installed)."""
    return distribution_version("fedge") or "0+unknown"


def distribution_version(name: str) -> str | None:
    """An installed distribution's version, read from its metadata (not imported); ``None``: absent."""
    # importlib.metadata costs ~50 ms to import: only processes that ask for a version pay it
    # (`fedge edge run` answers its first prediction without).
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(name)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Return the commit of the checkout fedge runs from, or ``None`` outside git."""
    source_dir = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=source_dir,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None
