"""Options and helpers every command group shares: the registry on disk, the operator API, output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedge.errors import AuthenticationError

if TYPE_CHECKING:
    from fedge.api_client import ApiClient
    from registry import Registry

__all__ = [
    "ApiUrlOpt",
    "CaOpt",
    "DatabaseUrlOpt",
    "JsonOpt",
    "RootOpt",
    "ShowJsonOpt",
    "TokenOpt",
    "actor_name",
    "checked_ca",
    "opened_registry",
    "operator_api",
    "print_json",
]

RootOpt = Annotated[
    str,
    typer.Option("--root", envvar="FEDGE_REGISTRY_ROOT", help="Registry folder (SQLite + artifacts)"),
]


DatabaseUrlOpt = Annotated[
    str,
    typer.Option("--database-url", envvar="FEDGE_REGISTRY_DATABASE_URL", help="SQLAlchemy URL of the store"),
]


# Every list and show command takes it: one JSON array (list) or object (show) on stdout, nothing else.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (machine output) instead of a table")]

# A show command prints JSON either way; it takes --json too, so scripts pass it everywhere alike.
ShowJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (what show always prints)")]


ApiUrlOpt = Annotated[str, typer.Option("--url", envvar="FEDGE_URL", help="The coordinator's operator API")]


TokenOpt = Annotated[
    str, typer.Option("--token", envvar="FEDGE_TOKEN", help="Bearer token", show_default=False)
]


# Every command that talks to the coordinator's API over HTTPS takes this option (and FEDGE_CA),
# and resolves it with checked_ca.
CaOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        envvar="FEDGE_CA",
        help="The federation's CA certificate (ca.crt from `fedge certs init`) the API's TLS chains to",
    ),
]


def checked_ca(ca: Path | str | None) -> Path | None:
    """The CA certificate of ``--ca`` / ``FEDGE_CA``, checked to be a readable file (``None``: system CAs).

    Raises
    ------
    ConfigError
        If the option names no file.
    """
    from fedge.errors import ConfigError

    if ca is None or str(ca) == "":
        return None
    path = Path(ca).expanduser()
    if not path.is_file():
        raise ConfigError(f"--ca {ca} (or FEDGE_CA) is not a file: pass the federation's ca.crt")
    return path


def read_token_file(path: Path | str | None, option: str) -> str | None:
    """The secret in the file an option names (stripped; ``None`` when no file is named).

    A secret is read from a file, never taken on the command line (where ``ps`` shows it).

    Raises
    ------
    ConfigError
        If the file cannot be read, is empty, or holds more than one line (naming the option, not
        the content).
    """
    from fedge.errors import ConfigError

    if path is None or str(path) == "":
        return None
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()[:4097]
    except OSError as exc:
        raise ConfigError(f"{option} {path} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if not token or len(raw) > 4096 or any(c.isspace() for c in token):
        raise ConfigError(
            f"{option} {path} must hold one token: one line of 1-4096 printable ASCII characters"
        )
    return token


@contextmanager
def opened_registry(
    root: str, database_url: str, *, create: bool = False, webhooks: list[Any] | None = None
) -> Iterator[Registry]:
    from fedge.errors import RegistryUnavailableError
    from registry import RegistryConfig, open_registry

    if not create and not database_url and not (Path(root).expanduser() / "registry.db").exists():
        raise RegistryUnavailableError(
            f"no registry at {root} (no registry.db): run `fedge simulate` first or pass --root"
        )
    # webhooks: the composed config's registry.webhooks, for commands whose events they should hear
    registry = open_registry(RegistryConfig(root=root, database_url=database_url, webhooks=webhooks or []))
    try:
        yield registry
    finally:
        registry.close()


def actor_name(actor: str | None) -> str:
    import getpass

    return actor or f"cli:{getpass.getuser()}"


def operator_api(url: str, token: str, ca: Path | None) -> ApiClient:
    """A client of the coordinator's operator API (``{url}/api/v1``); refuses to start without a token."""
    from fedge.api_client import ApiClient

    if not token:
        raise AuthenticationError("no token: pass --token or set FEDGE_TOKEN (see `fedge tokens create`)")
    return ApiClient(url.rstrip("/") + "/api/v1", token=token, ca=checked_ca(ca), timeout=60.0)


def listed(url: str, token: str, ca: Path | None, path: str, *, as_json: bool) -> list[Any] | None:
    """``GET path`` of the operator API: printed as JSON with ``--json`` (then ``None``), else the
    rows for the command's table."""
    with operator_api(url, token, ca) as api:
        rows: list[Any] = api.call("GET", path)
    if as_json:
        print_json(rows)
        return None
    return rows


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout (datetimes and paths as strings): ``--json``'s output."""
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
