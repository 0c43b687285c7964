"""Signing and verifying fedge's webhook deliveries (HMAC-SHA256 over ``"{timestamp}.{body}"``).

A receiver checks ``X-Fedge-Signature`` with :func:`verify_signature` before trusting a delivery;
docs/webhooks.md shows the whole receiver. The kernel holds this so a receiver needs ``fedge`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fedge.errors import AuthenticationError

__all__ = ["SIGNATURE_PREFIX", "sign_payload", "verify_signature"]

SIGNATURE_PREFIX = "sha256="


def sign_payload(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Fedge-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes,
    header: str,
    tolerance_s: float = 300.0,
    *,
    now: float | None = None,
) -> None:
    """Raise unless ``header`` signs ``body`` at ``timestamp`` and the timestamp is recent.

    ``timestamp`` is the ``X-Fedge-Timestamp`` header, ``header`` the ``X-Fedge-Signature`` one,
    ``body`` the raw request body (before any JSON parsing). A timestamp more than ``tolerance_s``
    seconds from ``now`` (default: the clock) is refused, so a captured delivery cannot be replayed
    later; keep the ``X-Fedge-Delivery`` ids seen within the tolerance to refuse replays inside it.

    Raises
    ------
    AuthenticationError
        Naming what was wrong: a malformed timestamp, a stale one, or a signature that does not match.
    """
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        raise AuthenticationError("webhook timestamp is not an integer number of seconds") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise AuthenticationError(
            f"webhook timestamp is {abs(current - ts):.0f} s from now, beyond the {tolerance_s:g} s tolerance"
        )
    expected = sign_payload(secret, ts, body)
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise AuthenticationError("webhook signature does not match the body and timestamp")
