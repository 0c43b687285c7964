"""``fedge registry list|show|runs|download``: read what the registry stores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import (
    CaOpt,
    DatabaseUrlOpt,
    JsonOpt,
    RootOpt,
    ShowJsonOpt,
    actor_name,
    checked_ca,
    opened_registry,
    print_json,
)
from fedge.cli.tables import Column, print_table

if TYPE_CHECKING:
    from fedge.crypto import Ed25519PublicKey
    from registry import RegistryClient

__all__ = ["registry_app"]

registry_app = typer.Typer(help="Inspect the model registry.", no_args_is_help=True)
aliases_app = typer.Typer(help="The aliases a model may take (declared ones only).", no_args_is_help=True)
registry_app.add_typer(aliases_app, name="aliases")
webhooks_app = typer.Typer(
    help="Registry webhooks (registry.webhooks, docs/webhooks.md).", no_args_is_help=True
)
registry_app.add_typer(webhooks_app, name="webhooks")


@registry_app.command("list")
@reports_errors
def list_versions(
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    name: Annotated[str | None, typer.Option(help="Only this model")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List model versions, newest first."""
    with opened_registry(root, database_url) as registry:
        versions = registry.store.list_versions(name=name)
    if as_json:
        print_json([_version_dict(v) for v in versions])
        return
    rows = []
    for v in versions:
        acc = v.metrics.get("central-accuracy", v.metrics.get("eval-accuracy"))
        parity = v.metrics.get("onnx-parity-max-abs-diff")
        rows.append((
            v.id,
            f"{v.name}:{v.number}",
            ", ".join(v.aliases) or None,
            v.run_id,
            None if acc is None else f"{acc:.4f}",
            None if parity is None else f"{parity:.1e}",
            f"{v.created_at:%Y-%m-%d %H:%M:%S}",
        ))  # fmt: skip
    print_table(VERSION_COLUMNS, rows)


VERSION_COLUMNS = (
    Column("id"),
    Column("version", min_width=12),
    Column("aliases", priority=2, min_width=10),
    Column("run", priority=3, min_width=12),
    Column("accuracy", priority=2),
    Column("onnx parity", priority=5),
    Column("created", priority=4, min_width=10),
)


@registry_app.command("show")
@reports_errors
def show_version(
    version: Annotated[str, typer.Argument(help="ID, NAME:NUMBER or NAME@ALIAS")],
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    as_json: ShowJsonOpt = False,
) -> None:
    """Show one version: artifacts, metrics, lineage, approvals, its run (config whole) and checkpoints."""
    del as_json  # JSON either way
    with opened_registry(root, database_url) as registry:
        v = registry.resolve(version)
        checkpoints = registry.store.list_checkpoints(v.run_id) if v.run_id else []
        run = registry.store.get_run(v.run_id) if v.run_id else None
        approvals = registry.store.list_approvals(v.id)
        paths = {a.kind: registry.artifacts.local_path(a.sha256) for a in v.artifacts}
    out = _version_dict(v)
    # What training spent in differential privacy (docs/privacy.md); null: trained without DP.
    out["privacy"] = (v.lineage or {}).get("privacy")
    out["run"] = _version_dict(run) if run else None
    out["approvals"] = [_version_dict(a) for a in approvals]
    out["artifact_paths"] = {k: str(p) if p else None for k, p in paths.items()}
    out["checkpoints"] = [
        {
            "id": c.id,
            "round": c.round,
            "weights_sha256": c.weights.sha256,
            "metrics": c.metrics,
            # who dropped out of the round and why (timeout, error, rejected)
            "dropped": c.lineage.get("dropped", []),
        }
        for c in checkpoints
    ]
    print_json(out)


@registry_app.command("runs")
@reports_errors
def list_runs(root: RootOpt = ".fedge", database_url: DatabaseUrlOpt = "", as_json: JsonOpt = False) -> None:
    """List runs, newest first (rounds: checkpoints stored / rounds planned)."""
    with opened_registry(root, database_url) as registry:
        runs = registry.store.list_runs()
        counts = {r.run_id: len(registry.store.list_checkpoints(r.run_id)) for r in runs}
    if as_json:
        print_json([_version_dict(r) | {"checkpoints": counts[r.run_id]} for r in runs])
        return
    rows = [
        (r.run_id, r.status, r.task, r.strategy, f"{counts[r.run_id]}/{r.num_rounds}",
         r.flower_run_id, r.reason, (r.error or "")[:60] or None)
        for r in runs
    ]  # fmt: skip
    print_table(REGISTRY_RUN_COLUMNS, rows)


REGISTRY_RUN_COLUMNS = (
    Column("run", min_width=12),
    Column("status"),
    Column("task", priority=2, min_width=6),
    Column("strategy", priority=4),
    Column("rounds", priority=2),
    Column("flower run", priority=6),
    Column("reason", priority=5, min_width=8),
    Column("error", priority=3, min_width=12),
)


@registry_app.command("download")
@reports_errors
def download(
    version: Annotated[str, typer.Argument(help="ID, NAME:NUMBER or NAME@ALIAS")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write")],
    kind: Annotated[
        str | None,
        typer.Option(
            help="bundle (signed zip), onnx, onnx-int8, weights, manifest; default: from --out's "
            "suffix (.zip bundle, .onnx onnx, .safetensors weights, .json manifest)"
        ),
    ] = None,
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    url: Annotated[str | None, typer.Option("--url", envvar="FEDGE_URL", help="Coordinator URL")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="FEDGE_TOKEN", help="API token")] = None,
    ca: CaOpt = None,
) -> None:
    """Write a version's signed release bundle (or one artifact), digest-verified, to a file.

    The artifact follows the file's suffix (``--out model.onnx`` writes the ONNX model); an
    explicit ``--kind`` that does not fit the suffix is refused.
    """
    kind = download_kind(out, kind)
    if url:
        with _client(url, token, ca) as client:
            size = client.download_to(version, out, kind=kind)  # streamed, digest-checked
        typer.echo(f"wrote {kind} of {version} ({size} bytes) to {out}")
        return
    from registry import assemble_bundle

    with opened_registry(root, database_url) as registry:
        v = registry.resolve(version)
        data = assemble_bundle(registry, v) if kind == "bundle" else registry.read_artifact(v, kind)
        if kind == "bundle":
            registry.store.append_audit(
                action="bundle.downloaded",
                actor=actor_name(None),
                subject=f"{v.name}:{v.number}",
                details={},
            )
    out.write_bytes(data)
    typer.echo(f"wrote {kind} of {v.name}:{v.number} ({len(data)} bytes) to {out}")


# What each artifact kind is saved as; the first suffix is the one --out's suffix maps back from.
DOWNLOAD_SUFFIXES = {
    "bundle": (".zip",),
    "onnx": (".onnx",),
    "onnx-int8": (".onnx",),
    "weights": (".safetensors",),
    "manifest": (".json",),
}


def download_kind(out: Path, kind: str | None) -> str:
    """The artifact kind to write to ``out``: ``kind`` if it fits the suffix, else the suffix's kind.

    Raises
    ------
    ConfigError
        For an unknown kind, a kind whose file type differs from ``out``'s suffix, or (without
        ``kind``) a suffix that names no artifact.
    """
    from fedge.errors import ConfigError

    suffix = out.suffix.lower()
    by_suffix = {s: k for k, suffixes in reversed(DOWNLOAD_SUFFIXES.items()) for s in suffixes}
    if kind is None:
        if suffix not in by_suffix:
            raise ConfigError(
                f"--out {out.name}: cannot tell the artifact from the suffix {out.suffix or '(none)'!r}: "
                f"name the file {', '.join(sorted(by_suffix))} or pass --kind "
                f"({', '.join(DOWNLOAD_SUFFIXES)})"
            )
        return by_suffix[suffix]
    if kind not in DOWNLOAD_SUFFIXES:
        raise ConfigError(f"--kind {kind!r} is not one of {', '.join(DOWNLOAD_SUFFIXES)}")
    if suffix in by_suffix and suffix not in DOWNLOAD_SUFFIXES[kind]:
        raise ConfigError(
            f"--kind {kind} is written as {'/'.join(DOWNLOAD_SUFFIXES[kind])}, but --out {out.name} "
            f"says {by_suffix[suffix]}: rename the file or drop --kind"
        )
    return kind


@registry_app.command("verify")
@reports_errors
def verify(
    bundle: Annotated[
        Path | None, typer.Argument(help="A release bundle (zip); without it, every release in the store")
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="The signer's Ed25519 public key (PEM)")
    ] = None,
    expect: Annotated[
        str | None,
        typer.Option("--expect", help="NAME:VERSION the bundle must have been signed as (refused otherwise)"),
    ] = None,
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
) -> None:
    """Check a bundle offline (signature, identity, digests, reference outputs), or with no BUNDLE
    every release of the registry: each manifest must be signed for its own version. Exit 1 if any
    check fails."""
    from fedge.crypto import load_public_key
    from fedge.errors import ConfigError
    from fedge.release_format import ReleaseIdentity, verify_bundle

    key = load_public_key(public_key) if public_key is not None else None
    if bundle is None:
        if expect is not None:
            raise ConfigError("--expect checks one BUNDLE file; give the bundle to check")
        _verify_store(root, database_url, key)
        return
    if key is None:
        raise ConfigError("checking a bundle file needs the signer's key: pass --public-key")
    identity = None
    if expect is not None:
        name, _, number = expect.rpartition(":")
        if not name or not number.isdigit():
            raise ConfigError(f"--expect {expect!r} is not NAME:VERSION (e.g. digits:3)")
        identity = ReleaseIdentity(name, int(number))
    verified = verify_bundle(bundle, key, expect=identity)
    m = verified.manifest
    signed = ReleaseIdentity.from_manifest(m)
    if signed is None:
        typer.echo(
            "warning: this bundle carries no signed identity (released before fedge bound them): "
            "the registry and edge devices refuse it; re-release the model",
            err=True,
        )
    typer.echo(
        f"bundle OK: {signed.describe() if signed else m.get('model', {}).get('name', '?')} signed by key "
        f"{verified.key_id}; {len(verified.files)} models match the manifest"
    )


def _verify_store(root: str, database_url: str, key: Ed25519PublicKey | None) -> None:
    from fedge.errors import ArtifactError
    from registry.bundle import verify_releases

    with opened_registry(root, database_url) as registry:
        results = verify_releases(registry, key)
    bad = [(v, problem) for v, problem in results if problem is not None]
    for v, problem in results:
        typer.echo(f"{v.name}:{v.number} (id {v.id}): {'OK' if problem is None else 'REFUSED: ' + problem}")
    if bad:
        raise ArtifactError(
            f"{len(bad)} of {len(results)} releases would be refused: "
            + "; ".join(f"{v.name}:{v.number}" for v, _ in bad)
        )
    typer.echo(f"all {len(results)} releases are signed for their own versions")


def _version_dict(v: object) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(v)  # type: ignore[call-overload]


OverrideOpt = Annotated[
    list[str] | None,
    typer.Option("--override", "-o", help="Hydra override for the registry config, e.g. registry.gates...=2"),
]
ActorOpt = Annotated[str | None, typer.Option("--as", help="Actor recorded in the audit log (local use)")]
UrlApiOpt = Annotated[
    str | None, typer.Option("--url", envvar="FEDGE_URL", help="Coordinator URL: act through its API")
]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="FEDGE_TOKEN", help="API token for --url")]


def _registry_config(root: str, override: list[str] | None) -> Any:
    """The registry config group as composed for this root, with the command's overrides."""
    from fedge.config import load_config

    return load_config([f"registry.root={root}", *(override or [])]).registry


def _client(url: str, token: str | None, ca: Path | None) -> RegistryClient:
    from fedge.errors import AuthenticationError
    from registry import RegistryClient

    if not token:
        raise AuthenticationError("--url needs a token: pass --token or set FEDGE_TOKEN")
    return RegistryClient(url, token, ca=checked_ca(ca))


@registry_app.command("promote")
@reports_errors
def promote_cmd(
    moves: Annotated[list[str], typer.Argument(help="VERSION=ALIAS pairs, all moved in one transaction")],
    reason: Annotated[str, typer.Option(help="Why (recorded with the move)")],
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    actor: ActorOpt = None,
    url: UrlApiOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    override: OverrideOpt = None,
) -> None:
    """Move aliases through the gates, e.g. `fedge registry promote digits:3=production --reason ...`."""
    from fedge.errors import ConfigError

    pairs = []
    for item in moves:
        ref, sep, alias = item.rpartition("=")
        if not sep or not ref or not alias:
            raise ConfigError(f"{item!r} is not VERSION=ALIAS (e.g. digits:3=production)")
        pairs.append((ref, alias))
    if url:
        with _client(url, token, ca) as client:
            moved = client.promote(pairs, reason=reason)
    else:
        from registry import promote

        config = _registry_config(root, override)
        with opened_registry(root, database_url, webhooks=config.webhooks) as registry:
            moved = promote(
                registry,
                moves=pairs,
                actor=actor_name(actor),
                reason=reason,
                gates=config.gates,
                aliases=config.aliases,
            )
    for v in moved:
        typer.echo(f"{v.name}:{v.number} (id {v.id}) now holds {', '.join(v.aliases)}")


@registry_app.command("approve")
@reports_errors
def approve_cmd(
    version: Annotated[str, typer.Argument(help="ID, NAME:NUMBER or NAME@ALIAS")],
    alias: Annotated[str, typer.Option(help="The alias this approval is for")] = "production",
    comment: Annotated[str, typer.Option(help="Why")] = "",
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    actor: ActorOpt = None,
    url: UrlApiOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    override: OverrideOpt = None,
) -> None:
    """Approve a version for a declared alias (one approval per operator)."""
    if url:
        with _client(url, token, ca) as client:
            result = client.approve(version, alias=alias, comment=comment)
        typer.echo(f"approved {version} for {alias} as {result['actor']}")
        return
    from registry import approve

    config = _registry_config(root, override)
    with opened_registry(root, database_url) as registry:
        approval = approve(
            registry,
            ref=version,
            alias=alias,
            actor=actor_name(actor),
            comment=comment,
            aliases=config.aliases,
            gates=config.gates,
        )
    typer.echo(f"approved {version} for {alias} as {approval.actor}")


@aliases_app.command("list")
@reports_errors
def list_aliases_cmd(
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    url: UrlApiOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    override: OverrideOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The aliases a model may take: the config's, its gates' and those an admin declared."""
    if url:
        with _client(url, token, ca) as client:
            declared = client.declared_aliases()
    else:
        from registry import declared_aliases

        config = _registry_config(root, override)
        with opened_registry(root, database_url) as registry:
            declared = declared_aliases(registry, config.aliases, config.gates)
    if as_json:
        print_json(list(declared))
        return
    print_table((Column("alias", min_width=12),), [(a,) for a in declared])


@aliases_app.command("add")
@reports_errors
def add_alias_cmd(
    alias: Annotated[str, typer.Argument(help="The new alias, e.g. canary")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log)")],
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    actor: ActorOpt = None,
    url: UrlApiOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    override: OverrideOpt = None,
) -> None:
    """Declare one more alias every model may take (admin token with --url; audited)."""
    if url:
        with _client(url, token, ca) as client:
            declared = client.declare_alias(alias, reason=reason)
    else:
        from registry import declare_alias

        config = _registry_config(root, override)
        with opened_registry(root, database_url) as registry:
            declared = declare_alias(
                registry,
                alias,
                actor=actor_name(actor),
                reason=reason,
                configured=config.aliases,
                gates=config.gates,
            )
    typer.echo(f"declared {alias}; declared aliases: {', '.join(declared)}")


from fedge.cli.rollout_cmd import rollout_app  # noqa: E402  (staged rollouts, docs/rollout.md)

registry_app.add_typer(rollout_app, name="rollout")


@webhooks_app.command("deliveries")
@reports_errors
def webhook_deliveries_cmd(
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    url: UrlApiOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Deliveries per page")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (newest first)")] = 0,
    event: Annotated[str | None, typer.Option(help="Only this event, e.g. version_registered")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The webhook delivery log, newest first: event, receiver, attempts, status, last error."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if event:
        params["event"] = event
    if url:
        from fedge.cli.options import operator_api

        with operator_api(url, token or "", ca) as api:
            page = api.get_json("/webhooks/deliveries", params=params)
    else:
        from registry import RegistryConfig, WebhookDeliveryStore

        with opened_registry(root, database_url):  # brings the schema up to date
            log = WebhookDeliveryStore.from_url(
                RegistryConfig(root=root, database_url=database_url).resolved_database_url()
            )
            try:
                items, total = log.list(limit=limit, offset=offset, event=event)
            finally:
                log.close()
        page = {"items": [d.to_dict() for d in items], "total": total, "limit": limit, "offset": offset}
    if as_json:
        print_json(page)
        return
    shown = len(page["items"])
    rows = [
        (str(d["created_at"])[:19].replace("T", " "), d["event"], d["status"], d["attempts"],
         d["status_code"], d["url"], (d["last_error"] or "")[:80] or None)
        for d in page["items"]
    ]  # fmt: skip
    print_table(
        DELIVERY_COLUMNS,
        rows,
        title=f"webhook deliveries {offset + 1 if shown else 0}-{offset + shown} of {page['total']}",
    )


DELIVERY_COLUMNS = (
    Column("created", priority=3, min_width=10),
    Column("event", min_width=12),
    Column("status"),
    Column("tries", priority=4),
    Column("code", priority=2),
    Column("receiver", priority=2, min_width=16),
    Column("last error", priority=3, min_width=12),
)
