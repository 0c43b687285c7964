"""``fedge tasks list`` and ``fedge new NAME``: the tasks fedge can federate, and a new task package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedge.cli.errors import reports_errors

__all__ = ["new_command", "tasks_app"]

tasks_app = typer.Typer(
    help="Tasks: built-in, installed (fedge.tasks entry points) or by import path.", no_args_is_help=True
)


@tasks_app.command("list")
@reports_errors
def tasks_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """List built-in and installed tasks with their input spec and target kind (broken ones with why)."""
    from dataclasses import asdict

    from fedge.tasks.catalog import list_tasks

    infos = list_tasks()
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    table = Table(title="fedge tasks (task=NAME, or task=package.module:Class)")
    for col in ("name", "source", "input", "target", "models"):
        table.add_column(col, overflow="fold")
    broken = []
    for info in infos:
        if info.error:
            broken.append(info)
            table.add_row(info.name, info.source, "[red]broken[/red]", "-", "-")
        else:
            table.add_row(info.name, info.source, info.input, info.target, ", ".join(info.models))
    Console().print(table)
    for info in broken:
        typer.secho(f"{info.name}: {info.error}", fg=typer.colors.RED, err=True)


@reports_errors
def new_command(
    name: Annotated[str, typer.Argument(help="The task's name: a lower-case identifier, e.g. chest_xray")],
    directory: Annotated[Path, typer.Option("--dir", help="Folder the package is created in")] = Path("."),
) -> None:
    """Scaffold a task package: pip install -e it, then `fedge simulate task=NAME`."""
    from fedge.tasks.scaffold import scaffold_task

    root = scaffold_task(name, parent=directory)
    typer.echo(f"created {root}")
    typer.echo(f"next: pip install -e {root} && fedge simulate task={name}", file=sys.stderr)
