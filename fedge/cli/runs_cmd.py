"""``fedge runs create|list|show|logs|stop|resume``: federated runs on the coordinator.

They talk to the coordinator's operator API over HTTPS with a bearer token (``FEDGE_URL``,
``FEDGE_TOKEN``, ``FEDGE_CA``), so operators never touch Flower's unauthenticated Control API.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import (
    ApiUrlOpt,
    CaOpt,
    JsonOpt,
    ShowJsonOpt,
    TokenOpt,
    listed,
    operator_api,
    print_json,
)
from fedge.cli.tables import Column, print_table

__all__ = ["runs_app"]

runs_app = typer.Typer(
    help="Create, follow and stop federated runs on the coordinator.", no_args_is_help=True
)


@runs_app.command("create")
@reports_errors
def runs_create(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Hydra overrides, e.g. strategy.num_rounds=3")
    ] = None,
    config: Annotated[str, typer.Option("--config", help="Config name in configs/")] = "config",
    reason: Annotated[str, typer.Option("--reason", help="Why this run (recorded)")] = "operator",
    url: ApiUrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Start a run on the coordinator's federation; prints the run id."""
    with operator_api(url, token, ca) as api:
        run = api.call(
            "POST", "/runs", json={"config": config, "overrides": overrides or [], "reason": reason}
        )
    typer.echo(run["run_id"])


@runs_app.command("list")
@reports_errors
def runs_list(
    url: ApiUrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Runs, newest first."""
    runs = listed(url, token, ca, "/runs", as_json=as_json)
    if runs is None:
        return
    rows = [
        (r["run_id"], r["status"], f"{r['rounds_done']}/{r['num_rounds']}", r["task"], r["strategy"],
         r["reason"], str(r["created_at"])[:19].replace("T", " "), r["error"])
        for r in runs
    ]  # fmt: skip
    print_table(RUN_COLUMNS, rows)


RUN_COLUMNS = (
    Column("run", min_width=12),
    Column("status"),
    Column("rounds", priority=2),
    Column("task", priority=3, min_width=6),
    Column("strategy", priority=5),
    Column("reason", priority=2, min_width=8),
    Column("created", priority=4, min_width=10),
    Column("error", priority=3, min_width=12),
)


@runs_app.command("show")
@reports_errors
def runs_show(
    run_id: str,
    url: ApiUrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: ShowJsonOpt = False,
) -> None:
    """A run with its rounds' metrics and participants (JSON)."""
    del as_json  # JSON either way
    with operator_api(url, token, ca) as api:
        print_json(api.call("GET", f"/runs/{run_id}"))


@runs_app.command("logs")
@reports_errors
def runs_logs(
    run_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until the run ends")] = False,
    url: ApiUrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Print the run's log (page by page; --follow keeps reading until the run finishes)."""
    import time

    offset = 0
    with operator_api(url, token, ca) as api:
        while True:
            page = api.call("GET", f"/runs/{run_id}/logs", params={"offset": offset})
            sys.stdout.write(page["text"])
            sys.stdout.flush()
            offset = page["next_offset"]
            if not page["text"]:
                if page["finished"] or not follow:
                    return
                time.sleep(1.0)


@runs_app.command("stop")
@reports_errors
def runs_stop(
    run_id: str, url: ApiUrlOpt = "https://127.0.0.1:8080", token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """Ask the coordinator to stop a run."""
    with operator_api(url, token, ca) as api:
        api.call("POST", f"/runs/{run_id}/stop")
    typer.echo(f"stop requested for run {run_id}")


@runs_app.command("resume")
@reports_errors
def runs_resume(
    run_id: str, url: ApiUrlOpt = "https://127.0.0.1:8080", token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """Continue an interrupted run from its last checkpoint; prints the new run's id."""
    with operator_api(url, token, ca) as api:
        run = api.call("POST", f"/runs/{run_id}/resume")
    typer.echo(run["run_id"])
