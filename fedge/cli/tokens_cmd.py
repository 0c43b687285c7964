"""``fedge tokens create|list|revoke``: the operator API's bearer tokens (stored hashed, shown once)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import DatabaseUrlOpt, JsonOpt, RootOpt, actor_name, opened_registry, print_json
from fedge.cli.tables import Column, print_table

if TYPE_CHECKING:
    from coordinator.auth import TokenStore

__all__ = ["tokens_app"]

tokens_app = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)


def _tokens(root: str, database_url: str) -> TokenStore:
    from coordinator.auth import TokenStore
    from registry import RegistryConfig

    return TokenStore.from_url(RegistryConfig(root=root, database_url=database_url).resolved_database_url())


@tokens_app.command("create")
@reports_errors
def tokens_create(
    role: Annotated[
        str, typer.Option(help="admin, operator, viewer, or device (posts one device's telemetry only)")
    ],
    name: Annotated[str, typer.Option(help="Who or what uses it (recorded as the actor)")],
    device: Annotated[
        str | None,
        typer.Option(
            help="With --role device (required there): the device or site name its telemetry is filed "
            "under, e.g. cam-17 or site-a"
        ),
    ] = None,
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
) -> None:
    """Create a token and print it once; only its hash is stored (creates the database if new)."""
    from coordinator.auth import DEVICE_ROLE, check_device_name

    if role == DEVICE_ROLE:
        check_device_name(device)  # refused before a database is created
    with opened_registry(root, database_url, create=True) as registry:
        store = _tokens(root, database_url)
        try:
            info, secret = store.create(name=name, role=role, device=device)
        finally:
            store.close()
        details = {"name": name, "role": role} | ({"device": device} if device is not None else {})
        registry.store.append_audit(
            action="token.created", actor=actor_name(None), subject=f"token {info.id}", details=details
        )
    bound = f", device {device}" if device is not None else ""
    typer.echo(secret)
    typer.echo(f"token {info.id} ({name}, {role}{bound}) created; it is shown only now", err=True)


@tokens_app.command("list")
@reports_errors
def tokens_list(
    root: RootOpt = ".fedge", database_url: DatabaseUrlOpt = "", as_json: JsonOpt = False
) -> None:
    """List tokens (never their secrets)."""
    from dataclasses import asdict

    store = _tokens(root, database_url)
    try:
        tokens = store.list()
    finally:
        store.close()
    if as_json:
        print_json([asdict(t) for t in tokens])
        return
    rows = [
        (t.id, t.name, f"{t.role}:{t.device}" if t.device else t.role,
         f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active", f"{t.created_at:%Y-%m-%d %H:%M}")
        for t in tokens
    ]  # fmt: skip
    print_table(TOKEN_COLUMNS, rows)


TOKEN_COLUMNS = (
    Column("id"),
    Column("name", min_width=12),
    Column("role", min_width=8),
    Column("state", min_width=8),
    Column("created", priority=2, min_width=10),
)


@tokens_app.command("revoke")
@reports_errors
def tokens_revoke(token_id: int, root: RootOpt = ".fedge", database_url: DatabaseUrlOpt = "") -> None:
    """Revoke a token by id."""
    with opened_registry(root, database_url) as registry:
        store = _tokens(root, database_url)
        try:
            store.revoke(token_id)
        finally:
            store.close()
        registry.store.append_audit(
            action="token.revoked", actor=actor_name(None), subject=f"token {token_id}", details={}
        )
    typer.echo(f"token {token_id} revoked")
