"""Processes that die with their parent: the parent-death request, and a guard that nothing outlives.

``die_with_parent`` is the ``preexec_fn`` every process fedge starts gets. The guard runs a
command so that nothing it starts outlives it: ``python -m fedge.process_guard PROGRAM [ARG...]``.

Flower's SuperNode starts a SuperExec, which starts a ClientApp process per message; each watches
its parent's pid and exits when that pid is gone. That watch fails where a dead parent lingers as
a zombie (a container whose pid 1 does not reap) and when the ClientApp is blocked in a retry
loop, so a client agent killed with SIGKILL could leave a ClientApp running for ever. This guard
sits between the agent and the SuperNode:

- it is a *child subreaper* (Linux): a descendant orphaned by its parent's death is re-parented to
  the guard, not to pid 1, so the guard sees and reaps it;
- it receives SIGTERM when the process that started it dies (``ManagedProcess`` asks Linux for
  that), and its child receives SIGTERM when the guard dies;
- on SIGTERM, SIGINT or SIGHUP it forwards SIGTERM to the program, gives it ``GRACE_S`` seconds,
  then stops every remaining descendant (SIGTERM, SIGKILL ``GRACE_S`` seconds later);
- when the program exits by itself, the descendants it left are stopped the same way;
- it exits with the program's exit code, or dies of the program's signal.

It imports nothing of fedge's but this module (it starts within tens of milliseconds).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import psutil

__all__ = ["GRACE_S", "die_with_parent", "guarded_command", "main"]

GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.1


def guarded_command(command: Sequence[str]) -> list[str]:
    """``command`` run under this guard by the current interpreter."""
    return [sys.executable, "-m", "fedge.process_guard", *command]


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send ``signum`` to the child when its parent dies.

    A coordinator or client agent killed with SIGKILL runs no cleanup: without this its SuperLink
    or SuperNode would live on as an orphan, holding the port and the node's identity. The
    request is made between fork and exec, so it covers the child from its first instruction.
    Linux ties it to the *thread* that forked: start long-lived processes from a thread that
    outlives them (the main thread, or the thread that also stops them).
    """
    prctl = _prctl()
    if prctl is None:
        return None
    # Built before the fork: the hook only makes the system call.
    args = (ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signum), *(ctypes.c_ulong(0),) * 3)
    parent = os.getpid()

    def hook() -> None:
        prctl(*args)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signum)

    return hook


def _make_subreaper() -> bool:
    prctl = _prctl()
    if prctl is None:
        return False
    zero = ctypes.c_ulong(0)
    return prctl(ctypes.c_int(_PR_SET_CHILD_SUBREAPER), ctypes.c_ulong(1), zero, zero, zero) == 0


_REAPED: dict[int, int] = {}  # pid -> wait status of every child this guard reaped


def _reap() -> None:
    """Reap every exited child (the program, adopted orphans) without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _REAPED[pid] = status


def _stop_descendants(grace: float) -> None:
    """SIGTERM every descendant, SIGKILL what is left after ``grace`` seconds; reap them all."""
    me = psutil.Process()
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        procs: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            procs = me.children(recursive=True)
        if not procs:
            return
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap()
            if not any(_alive(p) for p in procs):
                break
            time.sleep(_POLL_S)
    _reap()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m fedge.process_guard PROGRAM [ARG...]", file=sys.stderr)
        return 2
    _make_subreaper()
    asked: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        asked.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        child = subprocess.Popen(args, preexec_fn=die_with_parent(signal.SIGTERM))
    except OSError as exc:
        print(f"process_guard: cannot start {args[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    forwarded_at: float | None = None
    while True:
        _reap()
        if child.pid in _REAPED:
            break
        if asked and forwarded_at is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
            forwarded_at = time.monotonic()
        if forwarded_at is not None and time.monotonic() - forwarded_at > GRACE_S:
            break
        time.sleep(_POLL_S)
    _stop_descendants(GRACE_S if child.pid in _REAPED else 0.5)
    status = _REAPED.get(child.pid, signal.SIGKILL)  # not reaped at all: as if killed
    child.returncode = 0  # reaped here: keep Popen from waiting on it again
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


if __name__ == "__main__":
    sys.exit(main())
