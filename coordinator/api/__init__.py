"""The coordinator's operator HTTP API: ``create_app``, its routers, dependencies and response schemas."""

from coordinator.api.app import CoordinatorSettings, create_app

__all__ = ["CoordinatorSettings", "create_app"]
