"""Prometheus' own binaries for the deploy/ tests: skipped locally without them, a failure in CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _unavailable(reason: str) -> NoReturn:
    """Fail in CI, which must run Prometheus' checks; elsewhere skip, saying how to run them."""
    if _in_ci():
        pytest.fail(f"{reason}; CI installs it (.ci/run: apt-get install prometheus)", pytrace=False)
    pytest.skip(f"{reason}: apt-get install prometheus to run the Prometheus tests")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _unavailable(f"{name} is not on PATH")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of Debian's promtool."""
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus() -> str:
    """The path of Debian's prometheus server."""
    return _binary("prometheus")


def scrape_config(tmp: Path, *, coordinator: str, edge: str, token: str, interval: str = "15s") -> Path:
    """deploy/prometheus/prometheus.yml with its targets, token file and rule path made local to ``tmp``.

    Only the lines a user edits are changed, so that the shipped file is what is checked.
    """
    token_file = tmp / "fedge-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    for old, new in (
        ("/etc/prometheus/fedge-token", str(token_file)),
        ("rules/fedge.yml", str(DEPLOY / "prometheus" / "rules" / "fedge.yml")),
        ('"127.0.0.1:8080"', f'"{coordinator}"'),
        ('"127.0.0.1:8090"', f'"{edge}"'),
        ("scrape_interval: 15s", f"scrape_interval: {interval}"),
    ):
        assert old in text, f"deploy/prometheus/prometheus.yml no longer contains {old!r}"
        text = text.replace(old, new)
    path = tmp / "prometheus.yml"
    path.write_text(text)
    return path
