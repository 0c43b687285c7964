"""``fedge client start``, ``fedge nodes`` and ``fedge runs``: running and operating a deployment.

``client start`` runs at an institution (the client agent). ``nodes`` and ``runs`` talk to the
coordinator's operator API over HTTPS with a bearer token (``FEDGE_URL``, ``FEDGE_TOKEN``,
``FEDGE_CA``), so operators never touch Flower's unauthenticated Control API.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fedge.cli.errors import reports_errors
from fedge.errors import AuthenticationError, FedgeError, error_for_code

__all__ = ["client_start", "nodes_app", "runs_app"]

nodes_app = typer.Typer(
    help="Enrol, list and revoke institutions' nodes (admin token).", no_args_is_help=True
)
runs_app = typer.Typer(
    help="Create, follow and stop federated runs on the coordinator.", no_args_is_help=True
)

UrlOpt = Annotated[str, typer.Option("--url", envvar="FEDGE_URL", help="The coordinator's operator API")]
TokenOpt = Annotated[
    str, typer.Option("--token", envvar="FEDGE_TOKEN", help="Bearer token", show_default=False)
]
CaOpt = Annotated[
    Path | None, typer.Option("--ca", envvar="FEDGE_CA", help="CA certificate the API's TLS chains to")
]


class _Api:
    """A small client of the operator API: JSON in, JSON out, errors as FedgeError lines."""

    def __init__(self, url: str, token: str, ca: Path | None) -> None:
        import ssl

        import httpx

        if not token:
            raise AuthenticationError("no token: pass --token or set FEDGE_TOKEN (see `fedge tokens create`)")
        verify: bool | ssl.SSLContext = True
        if ca is not None:
            verify = ssl.create_default_context(cafile=str(ca))
        self._client = httpx.Client(
            base_url=url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=60.0,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise FedgeError(f"cannot reach the coordinator at {self._client.base_url}: {exc}") from exc
        if response.is_success:
            return response.json()
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            raise FedgeError(f"HTTP {response.status_code}: {response.text[:300]}") from None
        raise error_for_code(code, f"{message} (HTTP {response.status_code})")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _print(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


@nodes_app.command("add")
@reports_errors
def nodes_add(
    public_key: Annotated[
        Path, typer.Argument(help="The institution's NAME.pub (from `fedge client keygen`)")
    ],
    name: Annotated[str, typer.Option("--name", help="The node's name, e.g. hospital-a")],
    url: UrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Enrol a node's public key; its SuperNode may then connect."""
    from fedge.tls import load_node_public_key

    load_node_public_key(public_key)  # a clear local error before any request
    with _Api(url, token, ca) as api:
        node = api.call("POST", "/nodes", json={"name": name, "public_key": public_key.read_text()})
    typer.echo(f"node {node['name']} enrolled (key sha256 {node['key_sha256'][:16]}..)")


@nodes_app.command("list")
@reports_errors
def nodes_list(url: UrlOpt = "https://127.0.0.1:8080", token: TokenOpt = "", ca: CaOpt = None) -> None:
    """Enrolled nodes and their state (online, offline, registered, revoked)."""
    with _Api(url, token, ca) as api:
        for n in api.call("GET", "/nodes"):
            typer.echo(f"{n['name']}\t{n['state']}\t{n['last_seen'] or '-'}\t{n['key_sha256'][:16]}")


@nodes_app.command("revoke")
@reports_errors
def nodes_revoke(
    name: Annotated[str, typer.Argument(help="The node's name")],
    url: UrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Revoke a node: its key can no longer connect."""
    with _Api(url, token, ca) as api:
        api.call("DELETE", f"/nodes/{name}")
    typer.echo(f"node {name} revoked")


@runs_app.command("create")
@reports_errors
def runs_create(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Hydra overrides, e.g. strategy.num_rounds=3")
    ] = None,
    config: Annotated[str, typer.Option("--config", help="Config name in configs/")] = "config",
    reason: Annotated[str, typer.Option("--reason", help="Why this run (recorded)")] = "operator",
    url: UrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Start a run on the coordinator's federation; prints the run id."""
    with _Api(url, token, ca) as api:
        run = api.call(
            "POST", "/runs", json={"config": config, "overrides": overrides or [], "reason": reason}
        )
    typer.echo(run["run_id"])


@runs_app.command("list")
@reports_errors
def runs_list(url: UrlOpt = "https://127.0.0.1:8080", token: TokenOpt = "", ca: CaOpt = None) -> None:
    """Runs, newest first."""
    with _Api(url, token, ca) as api:
        for r in api.call("GET", "/runs"):
            typer.echo(f"{r['run_id']}\t{r['status']}\t{r['rounds_done']}/{r['num_rounds']}\t{r['reason']}")


@runs_app.command("show")
@reports_errors
def runs_show(
    run_id: str, url: UrlOpt = "https://127.0.0.1:8080", token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """A run with its rounds' metrics and participants (JSON)."""
    with _Api(url, token, ca) as api:
        _print(api.call("GET", f"/runs/{run_id}"))


@runs_app.command("logs")
@reports_errors
def runs_logs(
    run_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until the run ends")] = False,
    url: UrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Print the run's log (page by page; --follow keeps reading until the run finishes)."""
    import time

    offset = 0
    with _Api(url, token, ca) as api:
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
    run_id: str, url: UrlOpt = "https://127.0.0.1:8080", token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """Ask the coordinator to stop a run."""
    with _Api(url, token, ca) as api:
        api.call("POST", f"/runs/{run_id}/stop")
    typer.echo(f"stop requested for run {run_id}")


@reports_errors
def client_start(
    coordinator: Annotated[str, typer.Option("--coordinator", help="The SuperLink's Fleet API, HOST:PORT")],
    ca: Annotated[Path, typer.Option("--ca", help="The federation's CA certificate (ca.crt)")],
    key: Annotated[Path, typer.Option("--key", help="This node's private key (from `fedge client keygen`)")],
    data: Annotated[Path, typer.Option("--data", help="This institution's data: CSV, Parquet or NPZ")],
    name: Annotated[str, typer.Option("--name", help="This node's name (default: the key file's stem)")] = "",
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Private folder for the agent (default .fedge-client/NAME)"),
    ] = None,
    drift_budget: Annotated[
        float, typer.Option("--drift-budget", help="Total epsilon this node spends on drift telemetry")
    ] = 100.0,
    drift_min_window: Annotated[
        int, typer.Option("--drift-min-window", help="Fewest rows in a drift window (below: nothing sent)")
    ] = 0,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Hydra overrides naming the task, e.g. task=breast_cancer")
    ] = None,
) -> None:
    """Run the client agent: validate the data, keep it warm, and serve Flower rounds over TLS."""
    from client.agent import EXIT_REFUSED, AgentConfig, ClientAgent
    from simulations import load_config

    logging.getLogger("client").setLevel(logging.INFO)
    task = load_config(overrides or []).task
    node_name = name or key.stem
    agent = ClientAgent(
        AgentConfig(
            superlink=coordinator,
            ca_cert=ca,
            private_key=key,
            data_path=data,
            task=task,
            state_dir=state_dir or Path(".fedge-client") / node_name,
            name=node_name,
            drift_budget_epsilon=drift_budget,
            drift_min_window=drift_min_window,
        )
    )
    identity = agent.load_data()
    typer.echo(
        f"{data}: {identity.num_rows} rows valid for task {task.name}; "
        f"fingerprint {identity.fingerprint[:16]}.."
    )
    with agent:  # SIGTERM and Ctrl-C stop the SuperNode and the worker
        typer.echo(f"node {node_name} serving rounds from {coordinator} (Ctrl-C to stop)")
        code = agent.wait()
    reason = agent.refusal()
    if reason is not None:
        typer.secho(f"error [node_refused]: {reason}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_REFUSED)
    if code:
        log_file = agent.log_path
        typer.secho(
            f"error: the SuperNode exited with code {code}; see {log_file}", fg=typer.colors.RED, err=True
        )
        raise typer.Exit(1)
