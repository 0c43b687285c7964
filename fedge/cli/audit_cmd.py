"""``fedge audit verify|export``: check and export the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import DatabaseUrlOpt, RootOpt, opened_registry

__all__ = ["audit_app"]

audit_app = typer.Typer(help="Verify and export the hash-chained audit log.", no_args_is_help=True)


@audit_app.command("verify")
@reports_errors
def audit_verify(root: RootOpt = ".fedge", database_url: DatabaseUrlOpt = "") -> None:
    """Walk the chain; exit 1 naming the first altered or deleted entry."""
    from registry import verify_chain

    with opened_registry(root, database_url) as registry:
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
    database_url: DatabaseUrlOpt = "",
) -> None:
    """Write every entry as JSON lines (with its hashes, so the export can be verified)."""
    from dataclasses import asdict

    with opened_registry(root, database_url) as registry:
        lines = [json.dumps(asdict(e), sort_keys=True) for e in registry.store.list_audit()]
    text = "\n".join(lines) + ("\n" if lines else "")
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {len(lines)} entries to {out}", err=True)
