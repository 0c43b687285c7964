"""``fedge nodes add|list|revoke``: enrol and revoke institutions' nodes (admin token).

They talk to the coordinator's operator API over HTTPS with a bearer token (``FEDGE_URL``,
``FEDGE_TOKEN``, ``FEDGE_CA``), so operators never touch Flower's unauthenticated Control API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import ApiUrlOpt, CaOpt, JsonOpt, TokenOpt, listed, operator_api
from fedge.cli.tables import Column, print_table

__all__ = ["nodes_app"]

nodes_app = typer.Typer(
    help="Enrol, list and revoke institutions' nodes (admin token).", no_args_is_help=True
)


@nodes_app.command("add")
@reports_errors
def nodes_add(
    public_key: Annotated[
        Path, typer.Argument(help="The institution's NAME.pub (from `fedge client keygen`)")
    ],
    name: Annotated[str, typer.Option("--name", help="The node's name, e.g. hospital-a")],
    url: ApiUrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Enrol a node's public key; its SuperNode may then connect."""
    from fedge.tls import load_node_public_key

    load_node_public_key(public_key)  # a clear local error before any request
    with operator_api(url, token, ca) as api:
        node = api.call("POST", "/nodes", json={"name": name, "public_key": public_key.read_text()})
    typer.echo(f"node {node['name']} enrolled (key sha256 {node['key_sha256'][:16]}..)")


@nodes_app.command("list")
@reports_errors
def nodes_list(
    url: ApiUrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enrolled nodes and their state (online, offline, registered, revoked)."""
    nodes = listed(url, token, ca, "/nodes", as_json=as_json)
    if nodes is None:
        return
    print_table(
        NODE_COLUMNS,
        [(n["name"], n["state"], n["last_seen"], n["key_sha256"][:16], n["flower_node_id"]) for n in nodes],
    )


NODE_COLUMNS = (
    Column("name", min_width=12),
    Column("state"),
    Column("last seen", priority=2, min_width=10),
    Column("key sha256", priority=3, min_width=16),
    Column("flower node", priority=4, min_width=12),
)


@nodes_app.command("revoke")
@reports_errors
def nodes_revoke(
    name: Annotated[str, typer.Argument(help="The node's name")],
    url: ApiUrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Revoke a node: its key can no longer connect."""
    with operator_api(url, token, ca) as api:
        api.call("DELETE", f"/nodes/{name}")
    typer.echo(f"node {name} revoked")
