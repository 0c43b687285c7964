"""The coordinator's operator HTTP API."""

from coordinator.api.app import CoordinatorSettings, create_app

__all__ = ["CoordinatorSettings", "create_app"]
