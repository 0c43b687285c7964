"""The coordinator's app as tests build it: real registry, real token store, one token per role."""

from __future__ import annotations

from fastapi import FastAPI

from coordinator.api import CoordinatorSettings, create_app
from coordinator.auth import ROLES, TokenStore
from fedge.config import load_config


def role_tokens(database_url: str) -> dict[str, str]:
    """Create a token for every role (named ``<role>-1``) and return the secrets by role."""
    store = TokenStore.from_url(database_url)
    try:
        return {role: store.create(name=f"{role}-1", role=role)[1] for role in ROLES}
    finally:
        store.close()


def device_token(database_url: str, device: str) -> str:
    """Create a ``device`` token bound to ``device`` (named ``device-<device>``) and return its secret."""
    store = TokenStore.from_url(database_url)
    try:
        return store.create(name=f"device-{device}", role="device", device=device)[1]
    finally:
        store.close()


def operator_app(settings: CoordinatorSettings) -> tuple[FastAPI, dict[str, str]]:
    """The app with run configs composed from configs/ (no deployment) and a token per role."""
    app = create_app(
        settings,
        deployment=None,
        load_run_config=lambda name, overrides: load_config(overrides, config_name=name),
    )
    return app, role_tokens(settings.registry.resolved_database_url())
