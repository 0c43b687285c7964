"""The operator web console at ``/ui``: server-rendered pages over the API's stores (docs/console.md)."""

from coordinator.ui.routes import CONSOLE_PREFIX, mount_console

__all__ = ["CONSOLE_PREFIX", "mount_console"]
