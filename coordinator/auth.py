"""Bearer tokens for the operator API: stored hashed, with roles admin > operator > viewer, and device.

A ``device`` token is bound to one device (or site) name and stands outside the ladder: it may post
that device's telemetry and read what an edge device follows (an alias, a bundle, the audit log's
proofs), nothing else; no other role may post telemetry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime
from sqlmodel import Field, select

from coordinator.tables import CoordinatorRow, CoordinatorStore
from fedge.errors import (
    AuthenticationError,
    ConfigError,
    NotFoundError,
    PermissionDeniedError,
)

__all__ = [
    "DEVICE_ROLE",
    "ROLES",
    "TOKEN_ROLES",
    "Principal",
    "TokenInfo",
    "TokenRow",
    "TokenStore",
    "check_device_name",
    "require_device",
    "require_role",
]

# Higher includes lower: an admin may do what an operator may, an operator what a viewer may.
ROLES: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}
# Outside the ladder: bound to one device name, it posts that device's telemetry (and reads a release).
DEVICE_ROLE = "device"
TOKEN_ROLES: tuple[str, ...] = (*ROLES, DEVICE_ROLE)
DEVICE_NAME_MAX = 128
TOKEN_PREFIX = "fedge_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (the actor recorded in the audit log), role and, for a
    ``device`` token, the device (site) name it is bound to."""

    name: str
    role: str
    token_id: int
    device: str | None = None


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never the secret)."""

    id: int
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    device: str | None = None


class TokenRow(CoordinatorRow, table=True):
    """A stored token: its name, role (and bound device) and the sha256 of its secret."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    role: str = Field(max_length=16)
    device: str | None = Field(default=None, max_length=DEVICE_NAME_MAX)
    token_sha256: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))

    def to_info(self) -> TokenInfo:
        """The token as listed (never the secret)."""
        assert self.id is not None, "a token row is converted after it was flushed"
        return TokenInfo(self.id, self.name, self.role, self.created_at, self.revoked_at, self.device)

    def to_principal(self) -> Principal:
        """Who authenticates with this token."""
        assert self.id is not None, "a token row is converted after it was flushed"
        return Principal(name=self.name, role=self.role, token_id=self.id, device=self.device)


def check_device_name(device: str | None) -> str:
    """``device`` if it can name a device: 1 to 128 printable characters, no surrounding spaces.

    Raises
    ------
    ConfigError
        Naming what is wrong (a ``device`` token without ``--device`` among others).
    """
    if device is None or not device:
        raise ConfigError(
            "a device token is bound to a device name: add --device NAME (the device or site whose "
            "telemetry it posts, e.g. --device cam-17)"
        )
    if len(device) > DEVICE_NAME_MAX or device != device.strip() or not device.isprintable():
        raise ConfigError(
            f"device name {device[:DEVICE_NAME_MAX]!r} is not usable: 1 to {DEVICE_NAME_MAX} printable "
            "characters without leading or trailing spaces"
        )
    return device


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore(CoordinatorStore):
    """Tokens in a SQL table; only a sha256 of each secret is stored.

    Parameters
    ----------
    engine : Engine
        The database's shared engine (``TokenStore.from_url(url)`` opens one of its own).
    """

    def create(self, *, name: str, role: str, device: str | None = None) -> tuple[TokenInfo, str]:
        """Create a token; return its info and the secret (shown once, never stored).

        A ``device`` token needs ``device`` (the device or site name its telemetry is filed under);
        no other role takes one.
        """
        if role not in TOKEN_ROLES:
            raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(TOKEN_ROLES)}")
        if not name.strip():
            raise ConfigError("a token needs a name (who or what uses it)")
        if role == DEVICE_ROLE:
            device = check_device_name(device)
        elif device is not None:
            raise ConfigError(f"--device binds a 'device' token to a device; a {role!r} token takes none")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        row = TokenRow(name=name, role=role, device=device, token_sha256=_digest(secret), created_at=now)
        with self._session() as s:
            s.add(row)
            s.flush()
        return row.to_info(), secret

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
        with self._session() as s:
            row = s.exec(select(TokenRow).where(TokenRow.token_sha256 == digest)).first()
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_sha256, digest):
            raise AuthenticationError("the bearer token is unknown or revoked")
        return row.to_principal()

    def revoke(self, token_id: int) -> None:
        """Revoke a token; it authenticates no more."""
        with self._session() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                raise NotFoundError(f"token {token_id} does not exist")
            row.revoked_at = datetime.now(UTC)
            s.add(row)

    def list(self) -> list[TokenInfo]:
        """Every token, newest first, without secrets."""
        with self._session() as s:
            rows = s.exec(select(TokenRow).order_by(TokenRow.id.desc())).all()  # type: ignore[union-attr]
            return [r.to_info() for r in rows]


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


def require_device(principal: Principal) -> str:
    """The device name ``principal`` is bound to, if it holds a ``device`` token.

    Raises
    ------
    PermissionDeniedError
        For any other role (an admin's too): telemetry comes from devices and clients only.
    """
    if principal.role != DEVICE_ROLE or not principal.device:
        raise PermissionDeniedError(
            f"token {principal.name!r} has role {principal.role!r}; telemetry is posted with a 'device' "
            "token bound to the device's name (fedge tokens create --role device --device NAME)"
        )
    return principal.device
