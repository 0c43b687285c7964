"""``fedge registry rollout start|list|status|halt``: staged rollouts of an alias, through the API.

The coordinator keeps the rollout's state and judges each step on its devices' reports
(docs/rollout.md); these commands only ask it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import CaOpt, JsonOpt, ShowJsonOpt, checked_ca, print_json
from fedge.cli.tables import Column, print_table

__all__ = ["rollout_app"]

rollout_app = typer.Typer(help="Staged rollouts of an alias to a new version.", no_args_is_help=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="FEDGE_URL", help="Coordinator URL")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="FEDGE_TOKEN", help="API token (operator to act)")]
PATH = "/api/v1/rollouts"


def _call(url: str, token: str, ca: Any, method: str, path: str, body: Any = None) -> Any:
    from fedge.api_client import ApiClient
    from fedge.errors import AuthenticationError

    if not token:
        raise AuthenticationError("a rollout is asked of the coordinator: pass --token or set FEDGE_TOKEN")
    with ApiClient(url, token=token, ca=checked_ca(ca)) as api:
        return api.call(method, path, **({"json": body} if body is not None else {}))


def parse_groups(groups: list[str]) -> dict[str, list[str]]:
    """``name=dev1,dev2`` options as a dict (refused, naming the option, when malformed)."""
    from fedge.errors import ConfigError

    out: dict[str, list[str]] = {}
    for item in groups:
        name, sep, devices = item.partition("=")
        members = [d.strip() for d in devices.split(",") if d.strip()]
        if not sep or not name.strip() or not members:
            raise ConfigError(f"--groups {item[:80]!r} is not NAME=DEVICE[,DEVICE...]")
        out[name.strip()] = members
    return out


@rollout_app.command("start")
@reports_errors
def start(
    model: Annotated[str, typer.Argument(help="Model name, e.g. digits")],
    alias: Annotated[str, typer.Argument(help="Alias to roll out, e.g. production")],
    version: Annotated[str, typer.Argument(help="Version number (or MODEL:NUMBER) to roll out")],
    steps: Annotated[
        str, typer.Option("--steps", help="Comma-separated fractions (increasing, last 1.0) or group names")
    ] = "0.1,1.0",
    groups: Annotated[
        list[str] | None, typer.Option("--groups", help="A named device group: NAME=DEV1,DEV2 (repeatable)")
    ] = None,
    min_healthy_s: Annotated[
        float, typer.Option("--min-healthy-s", help="Seconds a step's cohort must stay healthy")
    ] = 60.0,
    max_error_rate: Annotated[
        float, typer.Option("--max-error-rate", help="Highest server error rate a cohort device may report")
    ] = 0.01,
    max_p99_ms: Annotated[
        float, typer.Option("--max-p99-ms", help="Highest p99 latency (ms) a cohort device may report")
    ] = 1000.0,
    url: UrlOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Start rolling MODEL@ALIAS out to VERSION, step by step."""
    body = {
        "model": model, "alias": alias, "version": version,
        "steps": [s.strip() for s in steps.split(",") if s.strip()],
        "groups": parse_groups(groups or []), "min_healthy_s": min_healthy_s,
        "max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms,
    }  # fmt: skip
    typer.echo(json.dumps(_call(url, token, ca, "POST", PATH, body), indent=2))


@rollout_app.command("status")
@reports_errors
def status(
    rollout_id: Annotated[int, typer.Argument(help="The rollout's id")],
    url: UrlOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: ShowJsonOpt = False,
) -> None:
    """Show a rollout: its steps, where it stands and its timeline (JSON)."""
    del as_json  # JSON either way
    typer.echo(json.dumps(_call(url, token, ca, "GET", f"{PATH}/{rollout_id}"), indent=2))


@rollout_app.command("halt")
@reports_errors
def halt(
    rollout_id: Annotated[int, typer.Argument(help="The rollout's id")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log)")] = "operator",
    url: UrlOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Halt a rollout: its cohort goes back to the previous version."""
    result = _call(url, token, ca, "POST", f"{PATH}/{rollout_id}/halt", {"reason": reason})
    typer.echo(json.dumps(result, indent=2))


@rollout_app.command("list")
@reports_errors
def list_rollouts(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The newest this many")] = 100,
    url: UrlOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rollouts, newest first."""
    rollouts = _call(url, token, ca, "GET", f"{PATH}?limit={limit}")
    if as_json:
        print_json(rollouts)
        return
    rows = [
        (r["id"], f"{r['model']}@{r['alias']}", f"{r['from_version']} -> {r['to_version']}", r["state"],
         f"{min(r['step'] + 1, len(r['steps']))}/{len(r['steps'])}", r["started_by"], r["reason"])
        for r in rollouts
    ]  # fmt: skip
    print_table(ROLLOUT_COLUMNS, rows)


ROLLOUT_COLUMNS = (
    Column("id"),
    Column("alias", min_width=12),
    Column("versions", priority=2, min_width=10),
    Column("state", min_width=8),
    Column("step", priority=2),
    Column("started by", priority=3, min_width=10),
    Column("reason", priority=4, min_width=10),
)
