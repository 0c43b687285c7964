"""Hydra schema of ``registry.webhooks``: where the registry posts its events, and its checks."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fedge.errors import ConfigError

__all__ = ["WEBHOOK_EVENTS", "WebhookConfig", "validate_webhooks"]

# The events a webhook may subscribe to (docs/webhooks.md describes each payload).
WEBHOOK_EVENTS = ("version_registered", "alias_moved", "gate_refused", "drift_triggered")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass
class WebhookConfig:
    """One receiver of registry events.

    Attributes
    ----------
    url : str
        An ``http://`` or ``https://`` URL the events are POSTed to.
    events : list of str
        The events sent there (see ``WEBHOOK_EVENTS``); empty means every event.
    secret_env : str
        The NAME of the environment variable holding the HMAC secret (never the secret itself).
    timeout_s : float
        Seconds one delivery attempt may take.
    max_attempts : int
        Attempts per delivery (retried with exponential backoff on errors, 5xx and 429).
    """

    url: str = ""
    events: list[str] = field(default_factory=list)
    secret_env: str = ""
    timeout_s: float = 5.0
    max_attempts: int = 5


def validate_webhooks(webhooks: list[WebhookConfig]) -> None:
    """Refuse a webhook whose URL is not http(s), an unknown event, or a malformed ``secret_env``.

    Raises
    ------
    ConfigError
        Naming the webhook by its index and what was wrong (never echoing credentials in its URL).
    """
    for i, hook in enumerate(webhooks):
        key = f"registry.webhooks[{i}]"
        parts = urlsplit(hook.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{key}.url must be an http:// or https:// URL with a host, got scheme "
                f"{parts.scheme or 'none'!r}"
            )
        unknown = sorted(set(hook.events) - set(WEBHOOK_EVENTS))
        if unknown:
            raise ConfigError(f"{key}.events: unknown event(s) {unknown}; known: {', '.join(WEBHOOK_EVENTS)}")
        if not _ENV_NAME.fullmatch(hook.secret_env):
            raise ConfigError(
                f"{key}.secret_env must name the environment variable holding the HMAC secret "
                "(e.g. FEDGE_WEBHOOK_SECRET), never the secret itself"
            )
        if not (math.isfinite(hook.timeout_s) and 0 < hook.timeout_s <= 60):
            raise ConfigError(f"{key}.timeout_s must lie in (0, 60], got {hook.timeout_s}")
        if not 1 <= hook.max_attempts <= 20:
            raise ConfigError(f"{key}.max_attempts must lie in [1, 20], got {hook.max_attempts}")
