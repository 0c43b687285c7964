"""Fixtures shared by the coordinator's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import Registry, RegistryConfig, open_registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A real registry (SQLite database and local artifact folder) under ``tmp_path``."""
    reg = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    try:
        yield reg
    finally:
        reg.close()
