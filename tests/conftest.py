"""Shared fixtures: a real SQLite registry in a temporary folder, tiny models and data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import Registry, RegistryConfig, open_registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry on a real SQLite file and artifact folder under ``tmp_path``."""
    reg = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    yield reg
    reg.close()


from tests.webhook_receiver import receiver  # noqa: E402, F401 (fixture: a webhook receiver on 127.0.0.1)
