"""Bearer tokens for the operator API: stored hashed, with roles admin > operator > viewer."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from coordinator.tables import coordinator_metadata, open_coordinator_engine
from fedge.errors import (
    AuthenticationError,
    ConfigError,
    NotFoundError,
    PermissionDeniedError,
)

__all__ = ["ROLES", "Principal", "TokenInfo", "TokenStore", "require_role"]

# Higher includes lower: an admin may do what an operator may, an operator what a viewer may.
ROLES: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}
TOKEN_PREFIX = "fedge_"

_tokens = Table(
    "api_tokens",
    coordinator_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (the actor recorded in the audit log) and role."""

    name: str
    role: str
    token_id: int


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never the secret)."""

    id: int
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens in a SQL table; only a sha256 of each secret is stored."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = open_coordinator_engine(url)

    def create(self, *, name: str, role: str) -> tuple[TokenInfo, str]:
        """Create a token; return its info and the secret (shown once, never stored)."""
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
        if not name.strip():
            raise ConfigError("a token needs a name (who or what uses it)")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            result = conn.execute(
                insert(_tokens).values(name=name, role=role, token_sha256=_digest(secret), created_at=now)
            )
            token_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        return TokenInfo(token_id, name, role, now, None), secret

    def authenticate(self, token: str | None) -> Principal:
        """Return the principal of an active token.

        Raises
        ------
        AuthenticationError
            If the token is absent, malformed, unknown or revoked (one message for all: a caller
            learns nothing about which tokens exist).
        """
        if not token or not token.startswith(TOKEN_PREFIX):
            raise AuthenticationError(
                "missing or malformed bearer token: send 'Authorization: Bearer fedge_...'"
            )
        digest = _digest(token)
        with self._engine.connect() as conn:
            row = conn.execute(select(_tokens).where(_tokens.c.token_sha256 == digest)).first()
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_sha256, digest):
            raise AuthenticationError("the bearer token is unknown or revoked")
        return Principal(name=row.name, role=row.role, token_id=row.id)

    def revoke(self, token_id: int) -> None:
        """Revoke a token; it authenticates no more."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(_tokens).where(_tokens.c.id == token_id).values(revoked_at=datetime.now(UTC))
            )
        if result.rowcount == 0:
            raise NotFoundError(f"token {token_id} does not exist")

    def list(self) -> list[TokenInfo]:
        """Every token, newest first, without secrets."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(_tokens).order_by(_tokens.c.id.desc())).all()
        return [TokenInfo(r.id, r.name, r.role, r.created_at, r.revoked_at) for r in rows]

    def close(self) -> None:
        """Release connections."""
        self._engine.dispose()


def require_role(principal: Principal, role: str) -> Principal:
    """Return ``principal`` if its role is at least ``role``.

    Raises
    ------
    PermissionDeniedError
        Naming the role needed and the role held.
    """
    if ROLES.get(principal.role, 0) < ROLES[role]:
        raise PermissionDeniedError(
            f"token {principal.name!r} has role {principal.role!r}; this needs {role!r} or higher"
        )
    return principal
