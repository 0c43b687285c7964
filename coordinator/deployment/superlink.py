"""A Flower SuperLink process that fedge starts, watches and always stops (with its children)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
import psutil

from fedge.errors import FederationError
from fedge.private_fs import private_dir, private_file
from fedge.processes import ManagedProcess, flower_env, free_port, log_tail, stop_process_tree

if TYPE_CHECKING:
    from fedge.tls import TlsFiles

__all__ = ["ManagedSuperLink"]

log = logging.getLogger(__name__)

# Ray's switch between a single-machine cluster (services on loopback) and one reachable from other
# machines; Linux defaults to the latter. "0": loopback only.
RAY_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ManagedSuperLink:
    """Start ``flower-superlink``, wait until healthy, stop it and its children.

    Use as a context manager; the process is stopped on normal exit, on error and on Ctrl-C.

    Two modes share this class: a simulation SuperLink per run (``fedge simulate``, plain HTTP on
    loopback) and the deployment SuperLink ``fedge coordinator serve`` keeps (TLS, SuperNode
    authentication; its state in memory unless ``state_file``). Flower 1.42 serves its Fleet,
    Control and Runtime APIs on one port and the Control API has no authentication: fedge binds it to
    loopback, and a multi-machine deployment puts a proxy in front that passes only the Fleet API.

    Parameters
    ----------
    home : Path
        Private folder: ``FLWR_HOME``, the SuperLink log, its state database (``state_file``).
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
    state_file : bool
        Keep Flower's state (runs, messages, objects) in ``home/superlink-state.db``. Off by
        default: fedge's own database holds what must survive (enrolments, runs, checkpoints,
        versions; enrolments are registered again with a fresh SuperLink), and Flower's SQLite
        state commits every message and object of every round (about 2 s per round of 3 clients
        on this machine's disk).
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
        state_file: bool = False,
    ) -> None:
        self.home = Path(home)
        self.simulation = simulation
        self.host = host
        self.port = port or free_port()
        self.tls = tls
        self.node_auth = node_auth
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.state_file = state_file
        self.process: ManagedProcess | None = None
        self.log_path = self.home / "superlink.log"
        self.pid_path = self.home / "superlink.pid"

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
        ]
        if self.state_file:
            cmd += ["--database", str(self.home / "superlink-state.db")]
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
        self.stop_stale()
        self._check_port_free()
        if self.state_file:
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
            # A deployment's ServerApp processes (flwr-serverapp, one per run) die with the SuperLink
            # even where Flower's own parent watch fails (a zombie parent): the guard adopts them.
            guard_descendants=not self.simulation,
        )
        self.process.start(health=self.healthy, timeout=self.startup_timeout)
        pid = self.process.program_pid or self.process.pid
        self.pid_path.write_text(f"{pid} {os.getpid()}\n")  # the SuperLink, its fedge
        log.info("SuperLink up on %s (pid %d)", self.address, pid)
        return self

    def stop_stale(self) -> int | None:
        """Stop a SuperLink that an earlier, killed fedge left running on this state folder; its pid.

        The pid file names the SuperLink and the fedge process that started it. The SuperLink is
        stopped only if it still is a ``flower-superlink`` whose command line points into this
        folder and that fedge process is gone (a reused pid is left alone).

        Raises
        ------
        FederationError
            If the fedge process that started it is still running: two coordinators cannot share
            one state folder.
        """
        try:
            pid, owner = (int(part) for part in self.pid_path.read_text().split()[:2])
        except (OSError, ValueError):
            return None
        try:
            process = psutil.Process(pid)
            cmdline = process.cmdline()
            flwr_home = process.environ().get("FLWR_HOME", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            cmdline, flwr_home = [], ""
        # This folder's SuperLink: its FLWR_HOME (or, with a state file, its database) lies in it.
        ours = any(os.path.basename(part) == "flower-superlink" for part in cmdline[:2]) and any(
            part.startswith(str(self.home)) for part in [*cmdline, flwr_home]
        )
        if not ours:
            self.pid_path.unlink(missing_ok=True)
            return None
        if owner != os.getpid() and _alive(owner):
            raise FederationError(
                f"another fedge process (pid {owner}) runs the SuperLink of {self.home} (pid {pid}): "
                "stop it first, or give this coordinator its own --state-dir"
            )
        log.warning(
            "stopping a stale flower-superlink (pid %d) that a killed coordinator (pid %d) left "
            "running on %s",
            pid,
            owner,
            self.home,
        )
        stop_process_tree(pid, timeout=10.0)
        self.pid_path.unlink(missing_ok=True)
        return pid

    def _check_port_free(self) -> None:
        """Refuse to start when another process listens on the SuperLink's port.

        Without this the new SuperLink would fail to bind while ``/health`` answered for the other
        process, and fedge would carry on with a SuperLink that is not its own.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As a server binds: connections of an earlier SuperLink in TIME_WAIT do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise FederationError(
                        f"cannot use port {self.port} on {self.host} for the SuperLink: {exc.strerror}"
                    ) from exc
                raise FederationError(
                    f"port {self.port} on {self.host} is already in use by another process: the SuperLink "
                    f"cannot listen there; stop that process or choose another port "
                    f"(fedge coordinator serve --superlink-port)"
                ) from exc

    def owns_port(self) -> bool:
        """Whether the port is listened on by this SuperLink (its process or one of its children)."""
        if self.process is None or self.process.pid is None or self.process.poll() is not None:
            return False
        try:
            root = psutil.Process(self.process.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        readable = False
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                connections = proc.net_connections(kind="inet")
                readable = True
                for conn in connections:
                    if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == self.port:
                        return True
        # Where the system hides sockets even of our own children, the port check before the start
        # (nobody else listened) and the live child are what is left to go by.
        return not readable

    def healthy(self) -> bool:
        """Whether this SuperLink's process is alive, listens on its port, and ``/health`` answers 2xx
        (over HTTPS, trusting only the federation's CA, with TLS).
        """
        if self.process is not None and not self.owns_port():
            return False
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
            self.pid_path.unlink(missing_ok=True)

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
