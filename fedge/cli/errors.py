"""How the CLI reports a :class:`FedgeError`: one line on stderr and an exit code by error kind."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer

from fedge.errors import FedgeError

__all__ = ["exit_code_for", "reports_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(error: FedgeError) -> int:
    """The error class's exit code: 2 bad configuration or input, 3 unusable registry, 4 node refused,
    1 for everything else (the table is in ``fedge.errors``)."""
    return error.exit_code


# Modules that come with the `server` extra; an edge-only install lacks them.
SERVER_MODULES = {
    "flwr",
    "torch",
    "sqlmodel",
    "sqlalchemy",
    "hydra",
    "omegaconf",
    "onnx",
    "sklearn",
    "alembic",
    "psutil",
}


@contextmanager
def _report() -> Iterator[None]:
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        typer.secho(
            f"error [missing_extra]: this command needs {exc.name!r}, which comes with the server "
            "extra: pip install 'fedge[server]' (an edge device needs only 'fedge[edge]')",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2) from None
    except FedgeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.code
        typer.secho(f"error [{exc.code}]: {first}", fg=typer.colors.RED, err=True)
        rest = str(exc).splitlines()[1:]
        if rest:
            print("\n".join(rest), file=sys.stderr)
        raise typer.Exit(exit_code_for(exc)) from None


def reports_errors(func: F) -> F:
    """Decorate a command so a :class:`FedgeError` becomes a one-line error and an exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _report():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
