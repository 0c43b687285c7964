"""The Flower app bundle (FAB) fedge submits: a shim whose components are the installed packages."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fedge.protocol import RUN_CONFIG_KEY
from fedge.version import fedge_version

__all__ = ["SHIM_PYPROJECT", "build_shim_fab"]

# No code travels in the bundle: an institution runs the fedge it installed and reviewed.
SHIM_PYPROJECT = f"""\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedge-app"
version = "{{version}}"
description = "fedge Flower app shim: components point at the installed fedge packages"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedge"

[tool.flwr.app.components]
serverapp = "coordinator.server_app:app"
clientapp = "client.client_app:app"

[tool.flwr.app.config]
{RUN_CONFIG_KEY} = ""
"""


def build_shim_fab() -> bytes:
    """Build the shim FAB with Flower's own builder and return its bytes."""
    from flwr.cli.build import build_fab_from_disk

    version = fedge_version().split("+")[0] or "0.0.0"
    with tempfile.TemporaryDirectory(prefix="fedge-fab-") as tmp:
        app_dir = Path(tmp) / "fedge-app"
        app_dir.mkdir()
        (app_dir / "pyproject.toml").write_text(SHIM_PYPROJECT.replace("{version}", version))
        return build_fab_from_disk(app_dir)
