"""A child process fedge starts, waits for, and always stops together with its descendants."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psutil

from fedge._process_tree import descendants, log_tail, open_private_log, stop_processes
from fedge.errors import FederationError
from fedge.interrupts import raise_if_interrupted
from fedge.private_fs import PRIVATE_UMASK
from fedge.process_guard import die_with_parent, guarded_command

__all__ = ["ManagedProcess", "resolve_program"]

log = logging.getLogger(__name__)

# Every started, not yet stopped process: stopped when the interpreter exits normally.
_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()
_ATEXIT_LOCK = threading.Lock()
_atexit_registered = False


def resolve_program(program: str) -> str:
    """Where a program given by bare name is: beside the running interpreter first, then ``PATH``.

    ``.venv/bin/fedge`` run without an activated venv (systemd, cron, pipx) has its
    ``flower-superlink`` and ``flower-supernode`` in that same ``bin`` folder, which is not on
    ``PATH``. The interpreter's path is not resolved: a venv's ``python`` is a link out of the venv.
    A name with a slash, or one found nowhere, is returned unchanged.
    """
    if os.sep in program or (os.altsep and os.altsep in program):
        return program
    beside = Path(sys.executable).parent / program
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(program) or program


def _with_interpreter_on_path(env: Mapping[str, str] | None) -> dict[str, str]:
    """``env`` (the parent's if ``None``) with the interpreter's folder first on ``PATH``.

    Flower's processes start their own (``flwr-serverapp``, ``flwr-clientapp``) by name.
    """
    child = dict(os.environ if env is None else env)
    folder = str(Path(sys.executable).parent)
    parts = [p for p in child.get("PATH", "").split(os.pathsep) if p]
    if folder not in parts:
        child["PATH"] = os.pathsep.join([folder, *parts])
    return child


def _stop_all_live() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=5.0)


def _register_atexit() -> None:
    global _atexit_registered
    with _ATEXIT_LOCK:
        if not _atexit_registered:
            atexit.register(_stop_all_live)
            _atexit_registered = True


class ManagedProcess:
    """One child process with its log file, health wait, descendants and a guaranteed stop.

    The child runs in its own session (a Ctrl-C in the terminal reaches fedge, which stops it),
    writes stdout and stderr to ``log_path`` (appended, mode 0600), receives ``death_signal``
    when its parent dies (Linux), and is stopped with every process it started on :meth:`stop`,
    on leaving a ``with`` block and at normal interpreter exit.

    Parameters
    ----------
    command : Sequence[str]
        The program and its arguments.
    log_path : Path
        Where stdout and stderr go (appended; created 0600, its folder 0700).
    env : Mapping[str, str] or None
        The child's environment; the parent's if ``None``.
    cwd : Path or None
        The child's working directory.
    name : str or None
        How error messages name the process; the program's name if ``None``.
    install_hint : str or None
        What to install when the program is not on ``PATH`` (appended to that error).
    death_signal : int or None
        Signal the child receives when its parent dies; ``None`` to let it outlive the parent.
        SIGTERM lets a child stop its own children in turn (a client agent its SuperNode).
    guard_descendants : bool
        Run the command under :mod:`fedge.process_guard`, which adopts and stops every process the
        command starts, even once the command or this process died without cleaning up (Linux).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        name: str | None = None,
        install_hint: str | None = None,
        death_signal: int | None = signal.SIGTERM,
        guard_descendants: bool = False,
    ) -> None:
        if not command:
            raise ValueError("a ManagedProcess needs a command")
        self.command = [str(part) for part in command]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = Path(cwd) if cwd is not None else None
        self.name = name or Path(self.command[0]).name
        self.install_hint = install_hint
        self.death_signal = death_signal
        self.guard_descendants = guard_descendants
        self._popen: subprocess.Popen[bytes] | None = None
        self._tracked: set[psutil.Process] = set()

    @property
    def pid(self) -> int | None:
        """The child's pid; ``None`` before :meth:`start`."""
        return self._popen.pid if self._popen is not None else None

    @property
    def program_pid(self) -> int | None:
        """The command's own process: under :mod:`fedge.process_guard` the guard's child, else
        :attr:`pid`; ``None`` before the start or once it is gone."""
        if not self.guard_descendants or self._popen is None:
            return self.pid
        try:
            children = psutil.Process(self._popen.pid).children()
        except psutil.NoSuchProcess:
            return None
        return children[0].pid if children else None

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal); ``None`` while running or unstarted."""
        return self.poll()

    def poll(self) -> int | None:
        """The exit code if the child has exited, else ``None``."""
        return self._popen.poll() if self._popen is not None else None

    def start(
        self, *, health: Callable[[], bool] | None = None, timeout: float = 60.0, interval: float = 0.2
    ) -> ManagedProcess:
        """Start the child; with ``health``, poll it until it returns ``True``.

        Raises
        ------
        FederationError
            If the program is not on ``PATH``, or the child exits or is not healthy within
            ``timeout`` seconds: the message names it, gives the exit code and the log's last
            lines. The child and its descendants are stopped first.
        """
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started (pid {self._popen.pid})")
        fd = open_private_log(self.log_path)
        preexec = die_with_parent(self.death_signal) if self.death_signal is not None else None
        command = [resolve_program(self.command[0]), *self.command[1:]]
        try:
            if self.guard_descendants:
                if shutil.which(command[0]) is None:  # said below, as for an unguarded command
                    raise FileNotFoundError(command[0])
                command = guarded_command(command)
            self._popen = subprocess.Popen(
                command,
                env=_with_interpreter_on_path(self.env),
                cwd=self.cwd,
                stdout=fd,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                umask=PRIVATE_UMASK,  # what Flower and Ray write (FLWR_HOME apps, state) stays private
                preexec_fn=preexec,  # only calls prctl: see die_with_parent
            )
        except FileNotFoundError as exc:
            if self.cwd is not None and not self.cwd.is_dir():
                raise FederationError(f"cannot start {self.name}: folder {self.cwd} does not exist") from exc
            hint = f": {self.install_hint}" if self.install_hint else ""
            raise FederationError(
                f"{self.command[0]} is neither beside this Python ({Path(sys.executable).parent}) "
                f"nor on PATH{hint}"
            ) from exc
        finally:
            os.close(fd)
        _register_atexit()
        _LIVE.add(self)
        with contextlib.suppress(psutil.NoSuchProcess):
            self._tracked.add(psutil.Process(self._popen.pid))
        log.debug("%s started (pid %d): %s", self.name, self._popen.pid, shlex.join(command))
        if health is not None:
            try:
                self._wait_healthy(health, timeout=timeout, interval=interval)
            except BaseException:
                self.stop()
                raise
        return self

    def _wait_healthy(self, health: Callable[[], bool], *, timeout: float, interval: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise FederationError(
                    f"{self.name} exited with code {code} while starting; its log ends:\n{self.log_tail()}"
                )
            if health():
                return
            if time.monotonic() >= deadline:
                raise FederationError(
                    f"{self.name} did not become healthy within {timeout:.0f}s; "
                    f"its log ends:\n{self.log_tail()}"
                )
            raise_if_interrupted()
            time.sleep(interval)

    def wait(self, timeout: float | None = None, *, interval: float = 0.2) -> int | None:
        """Wait for the child to exit; its exit code, or ``None`` after ``timeout`` seconds.

        Polls rather than blocks, so a Ctrl-C or SIGTERM that arrived meanwhile is raised here.
        """
        if self._popen is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self._popen.poll()) is None:
            raise_if_interrupted()
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(interval)
        return code

    def track_children(self) -> None:
        """Remember the current descendants, so they are stopped even if reparented later."""
        if self._popen is not None:
            self._tracked.update(descendants(self._tracked))

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log."""
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the child and every descendant: SIGTERM, SIGKILL after ``timeout`` (idempotent).

        Returns the child's exit code (``None`` if it was never started).
        """
        popen = self._popen
        if popen is None:
            return None
        deadline = time.monotonic() + timeout
        self.track_children()
        # The child itself is signalled and reaped through Popen, which keeps its exit code.
        others = [p for p in self._tracked if p.pid != popen.pid and p.is_running()]
        popen.send_signal(signal.SIGTERM)
        stop_processes(others, timeout=timeout)
        try:
            popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=5)
        self._tracked.clear()
        _LIVE.discard(self)
        return popen.returncode

    def __enter__(self) -> ManagedProcess:
        """Start the child unless :meth:`start` already did."""
        return self.start() if self._popen is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
