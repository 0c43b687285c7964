"""Console sessions: a random id in an HttpOnly cookie, the API token kept server-side, a CSRF token.

The token is authenticated again on every request (``TokenStore.authenticate``), so a revoked token
signs its sessions out; it never appears in a page, a cookie or a log line.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

__all__ = ["COOKIE_NAME", "ConsoleSession", "SessionStore"]

COOKIE_NAME = "fedge_console"
SESSION_TTL_S = 8 * 3600
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in browser: its id (the cookie), the API token it signed in with, its CSRF token."""

    id: str
    token: str
    csrf: str
    expires_at: float

    def csrf_matches(self, sent: str | None) -> bool:
        """Whether ``sent`` (a form's hidden field) is this session's CSRF token."""
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), str(sent).encode())


class SessionStore:
    """Sessions in memory (one coordinator process); they end at sign-out, expiry or a restart."""

    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._sessions: dict[str, ConsoleSession] = {}
        self._lock = threading.Lock()

    def open(self, token: str) -> ConsoleSession:
        """A new session for ``token`` (already authenticated by the caller)."""
        now = time.monotonic()
        session = ConsoleSession(
            id=secrets.token_urlsafe(32),
            token=token,
            csrf=secrets.token_urlsafe(32),
            expires_at=now + self._ttl_s,
        )
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
                if len(self._sessions) >= MAX_SESSIONS:  # drop the oldest
                    oldest = min(self._sessions.values(), key=lambda s: s.expires_at)
                    del self._sessions[oldest.id]
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of a cookie's value, if any."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at <= time.monotonic():
                del self._sessions[session_id]
                return None
        return session

    def close(self, session_id: str | None) -> None:
        """End a session (sign-out)."""
        with self._lock:
            self._sessions.pop(session_id or "", None)
