"""``fedge client keygen|start``: an institution's node key and its client agent.

An institution makes its node key pair and sends only the public half to the operator; the agent
validates its data, keeps a warm worker and serves Flower rounds over TLS.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors

__all__ = ["client_app"]

client_app = typer.Typer(help="Run a client agent at an institution.", no_args_is_help=True)


@client_app.command("keygen")
@reports_errors
def client_keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for NAME.key and NAME.pub")],
    name: Annotated[str, typer.Option("--name", help="This node's name (file names and enrolment)")] = "node",
) -> None:
    """Create this node's key pair for Flower node authentication (EC P-384, OpenSSH format)."""
    from fedge.tls import generate_node_keypair, load_node_public_key, public_key_fingerprint

    private_path, public_path = generate_node_keypair(out, name)
    fingerprint = public_key_fingerprint(load_node_public_key(public_path))
    typer.echo(f"private key: {private_path} (0600; it never leaves this machine)")
    typer.echo(f"public key:  {public_path}")
    typer.echo(f"fingerprint: sha256:{fingerprint}")
    typer.echo(
        f"send {public_path.name} to the federation operator, who enrols it with "
        f"`fedge nodes add --name {name} {public_path.name}`; confirm the fingerprint with them by "
        "another channel"
    )


@client_app.command("start")
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
    privacy_budget: Annotated[
        float | None,
        typer.Option(
            "--privacy-budget",
            help="Total epsilon this institution spends, local-DP training and drift telemetry together "
            "(one ledger; default: --drift-budget)",
        ),
    ] = None,
    drift_min_window: Annotated[
        int, typer.Option("--drift-min-window", help="Fewest rows in a drift window (below: nothing sent)")
    ] = 0,
    node_mode: Annotated[
        str,
        typer.Option(
            "--node",
            help="in-process: this agent holds the Flower connection and runs the ClientApp warm "
            "(sub-second message pulls); supernode: Flower's flower-supernode process",
        ),
    ] = "in-process",
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Hydra overrides naming the task, e.g. task=breast_cancer")
    ] = None,
) -> None:
    """Run the client agent: validate the data, keep it warm, and serve Flower rounds over TLS."""
    from client.agent import EXIT_REFUSED, AgentConfig, ClientAgent
    from fedge.config import load_config

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
            privacy_budget_epsilon=privacy_budget,
            node_mode=node_mode,
            drift_min_window=drift_min_window,
        )
    )
    identity = agent.load_data()
    typer.echo(
        f"{data}: {identity.num_rows} rows valid for task {task.name}; "
        f"fingerprint {identity.fingerprint[:16]}.."
    )
    with agent:  # SIGTERM and Ctrl-C stop the node and the worker
        typer.echo(f"node {node_name} serving rounds from {coordinator} (Ctrl-C to stop)")
        code = agent.wait()
    reason = agent.refusal()
    if reason is not None:
        typer.secho(f"error [node_refused]: {reason}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_REFUSED)
    if code:
        typer.secho(f"error: {agent.failure(code)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@client_app.command("example-data")
@reports_errors
def client_example_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write: .csv, .parquet or .npz")],
    task_name: Annotated[
        str, typer.Option("--task", help="The task whose format to follow, e.g. digits")
    ] = "digits",
    partition: Annotated[
        int, typer.Option("--partition", help="Which share of the task's data (from 0)")
    ] = 0,
    of: Annotated[int, typer.Option("--of", help="Into how many shares the data is split")] = 3,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file")] = False,
) -> None:
    """Write an example data file in the task's client format (the README's "Client data formats")."""
    from fedge.config import load_config
    from fedge.errors import ConfigError, ConflictError
    from simulations.local_deployment import partition_file

    if of < 1 or not 0 <= partition < of:
        raise ConfigError(f"--partition {partition} --of {of}: need 0 <= partition < of")
    if out.exists() and not force:
        raise ConflictError(f"{out} already exists; refusing to overwrite it (pass --force)")
    task = load_config([f"task={task_name}"]).task
    path = partition_file(out, task, partition, of)
    from client.data_files import load_client_data

    data = load_client_data(path, task, val_fraction=task.val_fraction, seed=task.data_seed)
    typer.echo(f"wrote {path}: {data.num_rows} rows for task {task.name} (share {partition} of {of})")
