"""``fedge audit``, ``fedge tokens`` and ``fedge coordinator``: operating the coordinator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.registry_cmd import RootOpt, UrlOpt, _actor, _opened
from fedge.errors import ConfigError

if TYPE_CHECKING:
    from coordinator.auth import TokenStore

__all__ = ["audit_app", "coordinator_app", "tokens_app"]

audit_app = typer.Typer(help="Verify and export the hash-chained audit log.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)
coordinator_app = typer.Typer(help="Run the coordinator's operator API.", no_args_is_help=True)


@audit_app.command("verify")
@reports_errors
def audit_verify(root: RootOpt = ".fedge", database_url: UrlOpt = "") -> None:
    """Walk the chain; exit 1 naming the first altered or deleted entry."""
    from registry import verify_chain

    with _opened(root, database_url) as registry:
        seq, head = registry.store.audit_head()
        result = verify_chain(registry.store.list_audit(), head_seq=seq, head_hash=head)
    if result.ok:
        typer.echo(f"audit log intact: {result.entries} entries, head {head[:12]}..")
        return
    typer.secho(
        f"audit log broken at entry {result.first_bad_seq}: {result.reason}", fg=typer.colors.RED, err=True
    )
    raise typer.Exit(1)


@audit_app.command("export")
@reports_errors
def audit_export(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="JSON lines file (stdout if omitted)")
    ] = None,
    root: RootOpt = ".fedge",
    database_url: UrlOpt = "",
) -> None:
    """Write every entry as JSON lines (with its hashes, so the export can be verified)."""
    from dataclasses import asdict

    with _opened(root, database_url) as registry:
        lines = [json.dumps(asdict(e), sort_keys=True) for e in registry.store.list_audit()]
    text = "\n".join(lines) + ("\n" if lines else "")
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {len(lines)} entries to {out}", err=True)


def _tokens(root: str, database_url: str) -> TokenStore:
    from coordinator.auth import TokenStore
    from registry import RegistryConfig

    return TokenStore(RegistryConfig(root=root, database_url=database_url).resolved_database_url())


@tokens_app.command("create")
@reports_errors
def tokens_create(
    role: Annotated[str, typer.Option(help="admin, operator or viewer")],
    name: Annotated[str, typer.Option(help="Who or what uses it (recorded as the actor)")],
    root: RootOpt = ".fedge",
    database_url: UrlOpt = "",
) -> None:
    """Create a token and print it once; only its hash is stored (creates the database if new)."""
    with _opened(root, database_url, create=True) as registry:
        store = _tokens(root, database_url)
        try:
            info, secret = store.create(name=name, role=role)
        finally:
            store.close()
        registry.store.append_audit(
            action="token.created",
            actor=_actor(None),
            subject=f"token {info.id}",
            details={"name": name, "role": role},
        )
    typer.echo(secret)
    typer.echo(f"token {info.id} ({name}, {role}) created; it is shown only now", err=True)


@tokens_app.command("list")
@reports_errors
def tokens_list(root: RootOpt = ".fedge", database_url: UrlOpt = "") -> None:
    """List tokens (never their secrets)."""
    store = _tokens(root, database_url)
    try:
        for t in store.list():
            state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
            typer.echo(f"{t.id}\t{t.name}\t{t.role}\t{state}")
    finally:
        store.close()


@tokens_app.command("revoke")
@reports_errors
def tokens_revoke(token_id: int, root: RootOpt = ".fedge", database_url: UrlOpt = "") -> None:
    """Revoke a token by id."""
    with _opened(root, database_url) as registry:
        store = _tokens(root, database_url)
        try:
            store.revoke(token_id)
        finally:
            store.close()
        registry.store.append_audit(
            action="token.revoked", actor=_actor(None), subject=f"token {token_id}", details={}
        )
    typer.echo(f"token {token_id} revoked")


@coordinator_app.command("serve")
@reports_errors
def serve(
    host: Annotated[str, typer.Option(help="Bind address of the operator API")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the operator API")] = 8080,
    tls_dir: Annotated[
        Path | None,
        typer.Option(
            "--tls-dir",
            help="Folder from `fedge certs init`: manage a deployment SuperLink (TLS, node auth) and "
            "serve the API over HTTPS. Without it: registry and reports only, plain HTTP on loopback.",
        ),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="The SuperLink's state database, run logs")
    ] = Path(".fedge/coordinator"),
    superlink_port: Annotated[int, typer.Option(help="Port of the SuperLink's Fleet API")] = 9092,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Hydra overrides, e.g. registry.root=PATH")
    ] = None,
) -> None:
    """Serve the operator API and, with --tls-dir, manage the federation's SuperLink."""
    import uvicorn

    from coordinator.api import CoordinatorSettings, create_app
    from coordinator.deployment import Deployment, DeploymentSettings
    from registry import open_registry
    from simulations import load_config

    config = load_config(overrides or [])
    if tls_dir is None and host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"--host {host} without --tls-dir would serve tokens in clear text: add --tls-dir")

    def load_run_config(name: str, run_overrides: list[str]) -> dict[str, object]:
        return load_config([*(overrides or []), *run_overrides], config_name=name).to_dict()

    registry = open_registry(config.registry)
    deployment = None
    try:
        if tls_dir is not None:
            deployment = Deployment(
                DeploymentSettings(state_dir=state_dir, tls_dir=tls_dir, superlink_port=superlink_port),
                registry,
                config.registry,
            ).start()
            typer.echo(f"SuperLink (TLS, node authentication) on {deployment.fleet_address}", err=True)
        app = create_app(
            CoordinatorSettings(registry=config.registry),
            deployment=deployment,
            load_run_config=load_run_config,
        )
        ssl_args: dict[str, str] = {}
        if deployment is not None:
            ssl_args = {
                "ssl_certfile": str(deployment.tls.server_cert),
                "ssl_keyfile": str(deployment.tls.server_key),
            }
        scheme = "https" if ssl_args else "http"
        typer.echo(f"operator API on {scheme}://{host}:{port}/api/v1 (docs at /api/v1/docs)", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, **ssl_args)
    finally:
        if deployment is not None:
            deployment.stop()
        registry.close()
