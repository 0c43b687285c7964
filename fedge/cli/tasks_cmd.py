"""``fedge tasks list`` and ``fedge new NAME``: the tasks fedge can federate, and a new task package."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import JsonOpt, print_json
from fedge.cli.tables import Column, print_table

__all__ = ["new_command", "tasks_app"]

tasks_app = typer.Typer(
    help="Tasks: built-in, installed (fedge.tasks entry points) or by import path.", no_args_is_help=True
)


@tasks_app.command("list")
@reports_errors
def tasks_list(
    as_json: JsonOpt = False,
) -> None:
    """List built-in and installed tasks with their input spec and target kind (broken ones with why)."""
    from dataclasses import asdict

    from fedge.tasks.catalog import list_tasks

    infos = list_tasks()
    if as_json:
        print_json([asdict(i) for i in infos])
        return
    rows = [
        (i.name, i.source, "broken", None, None) if i.error
        else (i.name, i.source, i.input, i.target, ", ".join(i.models))
        for i in infos
    ]  # fmt: skip
    print_table(TASK_COLUMNS, rows, title="fedge tasks (task=NAME, or task=package.module:Class)")
    for info in infos:
        if info.error:
            typer.secho(f"{info.name}: {info.error}", fg=typer.colors.RED, err=True)


TASK_COLUMNS = (
    Column("name", min_width=12),
    Column("source", priority=3, min_width=8),
    Column("input", priority=2, min_width=10),
    Column("target", priority=2, min_width=10),
    Column("models", priority=4, min_width=10),
)


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
