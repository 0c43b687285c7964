"""A Flower SuperLink process that fedge starts, watches and always stops (with its children)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from fedge.private_fs import private_dir, private_file
from fedge.processes import ManagedProcess, flower_env, free_port, log_tail

if TYPE_CHECKING:
    from fedge.tls import TlsFiles

__all__ = ["ManagedSuperLink"]

log = logging.getLogger(__name__)

# Ray's switch between a single-machine cluster (services on loopback) and one reachable from other
# machines; Linux defaults to the latter. "0": loopback only.
RAY_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ManagedSuperLink:
    """Start ``flower-superlink``, wait until healthy, stop it and its children.

    Use as a context manager; the process is stopped on normal exit, on error and on Ctrl-C.

    Two modes share this class: a simulation SuperLink per run (``fedge simulate``, plain HTTP on
    loopback) and the deployment SuperLink ``fedge coordinator serve`` keeps (TLS, SuperNode
    authentication, a persistent state database). Flower 1.42 serves its Fleet, Control and
    Runtime APIs on one port and the Control API has no authentication: fedge binds it to
    loopback, and a multi-machine deployment puts a proxy in front that passes only the Fleet API.

    Parameters
    ----------
    home : Path
        Private folder: ``FLWR_HOME``, the SuperLink log, its state database.
    simulation : bool
        Start in simulation mode (``fedge simulate``).
    port : int or None
        Port of the HTTP APIs (Fleet, Control, Runtime); a free one if ``None``.
    host : str
        Bind address; loopback unless a deployment knows better.
    tls : TlsFiles or None
        CA, certificate and key of the SuperLink: HTTPS on every API. ``None``: plain HTTP.
    node_auth : bool
        Accept only SuperNodes whose public key was registered (``--enable-supernode-auth``).
    startup_timeout : float
        Seconds to wait for ``/health`` before giving up (the process is then stopped).
    extra_args : list of str or None
        Appended to the command line.
    """

    def __init__(
        self,
        home: Path,
        *,
        simulation: bool = True,
        port: int | None = None,
        host: str = "127.0.0.1",
        tls: TlsFiles | None = None,
        node_auth: bool = False,
        startup_timeout: float = 60.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.simulation = simulation
        self.host = host
        self.port = port or free_port()
        self.tls = tls
        self.node_auth = node_auth
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.process: ManagedProcess | None = None
        self.log_path = self.home / "superlink.log"

    @property
    def address(self) -> str:
        """``host:port`` of the SuperLink's APIs (the Control API is reached on loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "127.0.0.1") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"

    @property
    def root_certificates(self) -> bytes | None:
        """The CA certificate (PEM) a client needs to trust this SuperLink; ``None`` without TLS."""
        return self.tls.ca_cert.read_bytes() if self.tls is not None else None

    def command(self) -> list[str]:
        """The SuperLink command line."""
        cmd = ["flower-superlink"]
        if self.tls is None:
            cmd.append("--insecure")
        else:
            cmd += [
                "--ssl-ca-certfile",
                str(self.tls.ca_cert),
                "--ssl-certfile",
                str(self.tls.server_cert),
                "--ssl-keyfile",
                str(self.tls.server_key),
            ]
        if self.node_auth:
            cmd.append("--enable-supernode-auth")
        cmd += [
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
            "--database",
            str(self.home / "superlink-state.db"),
        ]
        if self.simulation:
            cmd.append("--simulation")
        return cmd + self.extra_args

    def start(self) -> ManagedSuperLink:
        """Start the process and wait for ``/health``.

        Raises
        ------
        FederationError
            If the process exits or is not healthy within ``startup_timeout``; the log tail is
            included.
        """
        private_dir(self.home)
        private_dir(self.home / "flwr-home")
        private_file(self.home / "superlink-state.db")  # Flower's SQLite state: 0600 before it opens
        env = flower_env(self.home / "flwr-home")
        if self.simulation:
            # Ray binds its GCS, raylet and workers to the node's address (all interfaces) unless
            # told this is a single-machine cluster; then every Ray service listens on 127.0.0.1.
            env[RAY_LOCAL_ONLY_ENV] = "0"
        self.process = ManagedProcess(
            self.command(),
            log_path=self.log_path,
            env=env,
            cwd=self.home,
            name=f"flower-superlink on {self.address}",
            install_hint="install fedge (it depends on flwr) in this environment",
        )
        self.process.start(health=self.healthy, timeout=self.startup_timeout)
        log.info("SuperLink up on %s (pid %d)", self.address, self.process.pid)
        return self

    def healthy(self) -> bool:
        """Whether ``/health`` answers 2xx (over HTTPS, trusting only the federation's CA, with TLS)."""
        scheme = "https" if self.tls is not None else "http"
        verify: bool | ssl.SSLContext = True
        if self.tls is not None:
            verify = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        try:
            return httpx.get(f"{scheme}://{self.address}/health", timeout=1.0, verify=verify).is_success
        except httpx.HTTPError:
            return False

    def track_children(self) -> None:
        """Remember the current descendants, so they are stopped even if reparented later."""
        if self.process is not None:
            self.process.track_children()

    def stop(self) -> None:
        """Stop the SuperLink and every process it started (idempotent)."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the SuperLink log."""
        return log_tail(self.log_path, lines)

    def __enter__(self) -> ManagedSuperLink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
