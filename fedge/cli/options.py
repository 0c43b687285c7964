"""Options and helpers every command group shares: the registry on disk, the operator API, output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedge.errors import AuthenticationError, FedgeError, error_for_code

if TYPE_CHECKING:
    from registry import Registry

__all__ = [
    "ApiUrlOpt",
    "CaOpt",
    "DatabaseUrlOpt",
    "OperatorApi",
    "RootOpt",
    "TokenOpt",
    "actor_name",
    "opened_registry",
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


ApiUrlOpt = Annotated[str, typer.Option("--url", envvar="FEDGE_URL", help="The coordinator's operator API")]


TokenOpt = Annotated[
    str, typer.Option("--token", envvar="FEDGE_TOKEN", help="Bearer token", show_default=False)
]


CaOpt = Annotated[
    Path | None, typer.Option("--ca", envvar="FEDGE_CA", help="CA certificate the API's TLS chains to")
]


@contextmanager
def opened_registry(root: str, database_url: str, *, create: bool = False) -> Iterator[Registry]:
    from fedge.errors import RegistryUnavailableError
    from registry import RegistryConfig, open_registry

    if not create and not database_url and not (Path(root).expanduser() / "registry.db").exists():
        raise RegistryUnavailableError(
            f"no registry at {root} (no registry.db): run `fedge simulate` first or pass --root"
        )
    registry = open_registry(RegistryConfig(root=root, database_url=database_url))
    try:
        yield registry
    finally:
        registry.close()


def actor_name(actor: str | None) -> str:
    import getpass

    return actor or f"cli:{getpass.getuser()}"


class OperatorApi:
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

    def __enter__(self) -> OperatorApi:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))
