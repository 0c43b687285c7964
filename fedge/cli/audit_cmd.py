"""``fedge audit verify|head|export|list``: check the audit log, export its signed tree head or its entries,
list its latest entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import DatabaseUrlOpt, JsonOpt, RootOpt, opened_registry, print_json
from fedge.cli.tables import Column, print_table

if TYPE_CHECKING:
    from fedge.transparency import SignedTreeHead

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="Verify the audit log, export its signed head or entries, list the latest.", no_args_is_help=True
)


TrustedHeadOpt = Annotated[
    Path | None,
    typer.Option(
        "--trusted-head",
        help="A signed head exported earlier (`fedge audit head --out`): the log must extend it",
    ),
]
PublicKeyOpt = Annotated[
    Path | None,
    typer.Option("--public-key", help="The registry's public key (default: the one beside its signing key)"),
]


@audit_app.command("verify")
@reports_errors
def audit_verify(
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    trusted_head: TrustedHeadOpt = None,
    public_key: PublicKeyOpt = None,
) -> None:
    """Check the chain, the Merkle tree, the signed head and (given one) consistency with a trusted head.

    Exit 1 naming what broke: an altered entry, entries deleted at the end, a wiped log, or a row
    rewritten with recomputed chain hashes (seen from any earlier head).
    """
    from fedge.crypto import load_public_key, public_key_path_for
    from registry import RegistryConfig
    from registry.audit import verify_log

    trusted = _read_head(trusted_head) if trusted_head is not None else None
    if public_key is None:
        default = public_key_path_for(RegistryConfig(root=root).resolved_signing_key())
        public_key = default if default.exists() else None
    key = load_public_key(public_key) if public_key is not None else None
    with opened_registry(root, database_url) as registry:
        seq, head = registry.store.audit_head()
        result = verify_log(
            registry.store.list_audit(),
            head_seq=seq,
            head_hash=head,
            signed_head=registry.store.signed_audit_head(sign_if_stale=False),
            public_key=key,
            trusted_head=trusted,
        )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if result.ok:
        extends = f", extends the trusted head of {trusted.tree_size} entries" if trusted is not None else ""
        typer.echo(
            f"audit log intact: {result.entries} entries, tree root {result.root_hash[:12]}..{extends}"
        )
        return
    where = f" at entry {result.first_bad_seq}" if result.first_bad_seq is not None else ""
    typer.secho(f"audit log broken{where}: {result.reason}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@audit_app.command("head")
@reports_errors
def audit_head(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="JSON file (stdout if omitted)")] = None,
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
) -> None:
    """Export the audit tree's signed head, for a witness to keep and later pass to --trusted-head."""
    from fedge.errors import RegistryError

    with opened_registry(root, database_url) as registry:
        head = registry.store.signed_audit_head()
    if head is None:
        raise RegistryError("the registry has no key to sign its audit head with")
    text = json.dumps(head.to_dict(), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote the signed head of {head.tree_size} entries to {out}", err=True)


def _read_head(path: Path) -> SignedTreeHead:
    from fedge.errors import ConfigError, DataError
    from fedge.transparency import SignedTreeHead

    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the trusted head {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"the trusted head {path} is not JSON: {exc}") from exc
    try:
        return SignedTreeHead.from_dict(data)
    except DataError as exc:
        raise ConfigError(f"the trusted head {path}: {exc.message}") from exc


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


@audit_app.command("list")
@reports_errors
def audit_list(
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    limit: Annotated[int, typer.Option(min=1, help="The latest this many entries")] = 50,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. alias.moved")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The latest entries of the audit log, oldest first (`fedge audit verify` checks them)."""
    from dataclasses import asdict

    with opened_registry(root, database_url) as registry:
        entries = registry.store.list_audit(action=action)[-limit:]
    if as_json:
        print_json([asdict(e) for e in entries])
        return
    rows = [
        (e.seq, str(e.created_at)[:19].replace("T", " "), e.action, e.actor, e.subject,
         json.dumps(e.details, sort_keys=True, default=str) if e.details else None)
        for e in entries
    ]  # fmt: skip
    print_table(AUDIT_COLUMNS, rows)


AUDIT_COLUMNS = (
    Column("seq"),
    Column("time", priority=3, min_width=10),
    Column("action", min_width=12),
    Column("actor", priority=2, min_width=10),
    Column("subject", priority=2, min_width=12),
    Column("details", priority=4, min_width=16),
)
