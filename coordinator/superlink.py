"""A Flower SuperLink process that fedge starts, watches and always stops (with its children)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from fedge.errors import FederationError

__all__ = ["ManagedSuperLink", "flower_env", "free_port", "stop_process_tree"]

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def flower_env(flwr_home: Path) -> dict[str, str]:
    """The environment of every Flower process fedge starts: private home, no telemetry.

    Runtime dependency installation is disabled too: it would ``uv sync`` the app per run and
    pull packages (a CUDA torch) that an institution did not review.
    """
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DEDUP_LOGS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def stop_process_tree(pid: int, *, timeout: float = 10.0) -> list[int]:
    """Terminate ``pid`` and every descendant (SIGTERM, then SIGKILL after ``timeout``).

    Descendants are collected before the parent is signalled, so that processes reparented on
    its death (Ray's workers, the SuperExec) are still found. Returns the pids signalled.
    """
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    # A child may have forked after the first sweep; look again before killing.
    for proc in list(alive):
        with contextlib.suppress(psutil.NoSuchProcess):
            alive.extend(c for c in proc.children(recursive=True) if c not in alive)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in procs]


class ManagedSuperLink:
    """Start ``flower-superlink`` on 127.0.0.1, wait until healthy, stop it and its children.

    Use as a context manager; the process is stopped on normal exit, on error and on Ctrl-C.

    Parameters
    ----------
    home : Path
        Private folder: ``FLWR_HOME``, the SuperLink log, its state database.
    simulation : bool
        Start in simulation mode (``fedge simulate``).
    port : int or None
        Port of the HTTP APIs (Fleet, Control, Runtime); a free one if ``None``.
    """

    def __init__(
        self,
        home: Path,
        *,
        simulation: bool = True,
        port: int | None = None,
        startup_timeout: float = 60.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.simulation = simulation
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "superlink.log"
        self.tracked_pids: set[int] = set()

    @property
    def address(self) -> str:
        """``host:port`` of the Control API."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The SuperLink command line."""
        cmd = [
            "flower-superlink",
            "--insecure",
            "--host",
            "127.0.0.1",
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
        (self.home / "flwr-home").mkdir(parents=True, exist_ok=True)
        log_fh = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                env=flower_env(self.home / "flwr-home"),
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
        except FileNotFoundError as exc:
            raise FederationError(
                "flower-superlink is not on PATH: install fedge (it depends on flwr) in this environment"
            ) from exc
        finally:
            log_fh.close()
        self.tracked_pids.add(self.process.pid)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FederationError(
                    f"flower-superlink exited with code {self.process.returncode} while starting; "
                    f"its log ends:\n{self.log_tail()}"
                )
            if self.healthy():
                log.info("SuperLink up on %s (pid %d)", self.address, self.process.pid)
                return self
            time.sleep(0.2)
        self.stop()
        raise FederationError(
            f"flower-superlink did not become healthy on {self.address} within "
            f"{self.startup_timeout:.0f}s; its log ends:\n{self.log_tail()}"
        )

    def healthy(self) -> bool:
        """Whether ``/health`` answers 2xx."""
        try:
            return httpx.get(f"http://{self.address}/health", timeout=1.0).is_success
        except httpx.HTTPError:
            return False

    def track_children(self) -> None:
        """Remember the current descendants, so they are stopped even if reparented later."""
        if self.process is None:
            return
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.tracked_pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        """Stop the SuperLink and every process it started (idempotent)."""
        if self.process is None:
            return
        self.track_children()
        stop_process_tree(self.process.pid)
        for pid in self.tracked_pids:
            if psutil.pid_exists(pid):
                stop_process_tree(pid, timeout=5)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the SuperLink log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ManagedSuperLink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
