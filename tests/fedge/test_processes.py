"""ManagedProcess with real child processes: health wait, failures, tree stop, death with the parent."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedge.errors import FederationError
from fedge.processes import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]
IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "


def _python(code: str, tmp_path: Path, name: str | None = None) -> ManagedProcess:
    return ManagedProcess([sys.executable, "-c", code], log_path=tmp_path / "logs" / "child.log", name=name)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def test_start_waits_until_the_health_check_passes(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = _python(
        f"import pathlib, time; time.sleep(0.5); pathlib.Path({str(ready)!r}).touch(); time.sleep(60)",
        tmp_path,
    )

    with child.start(health=ready.exists, timeout=30, interval=0.05):
        assert ready.exists() and child.poll() is None

    assert child.returncode == -signal.SIGTERM


def test_a_health_wait_that_times_out_names_the_process_and_shows_the_log_tail(tmp_path: Path) -> None:
    child = _python(
        "import time; print('step one', flush=True); print('stuck on step two', flush=True); time.sleep(60)",
        tmp_path,
        name="the demo",
    )

    with pytest.raises(FederationError, match=r"the demo did not become healthy within 1s") as raised:
        child.start(health=lambda: False, timeout=1.0, interval=0.05)

    assert raised.value.code == "federation_failed"
    assert raised.value.message.endswith("step one\nstuck on step two")
    assert child.returncode is not None, "a process that never became healthy is stopped"


def test_a_process_that_exits_while_starting_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    child = _python("import sys; print('error: unknown flag --nope', flush=True); sys.exit(3)", tmp_path)

    with pytest.raises(FederationError, match=r"python\S* exited with code 3 while starting") as raised:
        child.start(health=lambda: False, timeout=30)

    assert "error: unknown flag --nope" in str(raised.value)


def test_a_missing_program_names_what_to_install(tmp_path: Path) -> None:
    child = ManagedProcess(
        ["fedge-no-such-program"], log_path=tmp_path / "x.log", install_hint="install fedge[x]"
    )

    with pytest.raises(
        FederationError,
        match=r"fedge-no-such-program is neither beside this Python \(.+\) nor on PATH: install fedge\[x\]",
    ):
        child.start()


def test_stop_leaves_no_survivor_of_a_tree_that_ignores_sigterm(tmp_path: Path) -> None:
    grandchild = IGNORE_TERM + "time.sleep(300)"
    child = _python(
        f"import subprocess, sys; {IGNORE_TERM}"
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}]); "
        "print(p.pid, flush=True); time.sleep(300)",
        tmp_path,
    )
    child.start(health=lambda: child.log_tail(1).strip().isdigit(), timeout=30, interval=0.05)
    tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    assert int(child.log_tail(1)) in {p.pid for p in tree}

    assert child.stop(timeout=1.0) == -signal.SIGKILL
    assert child.stop() == -signal.SIGKILL, "stop is idempotent"

    assert all(_wait_gone(p.pid, 5) for p in tree)


def test_the_context_manager_starts_and_stops_the_child(tmp_path: Path) -> None:
    with _python("import time; time.sleep(300)", tmp_path) as child:
        pid = child.pid
        assert pid is not None and child.poll() is None
        assert child.wait(timeout=0.2) is None

    assert _gone(pid) and child.wait(timeout=1) == -signal.SIGTERM


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_dies_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    parent_code = (
        "import sys, time; from pathlib import Path; from fedge.processes import ManagedProcess; "
        "p = ManagedProcess([sys.executable, '-c', 'import time; time.sleep(300)'], "
        f"log_path=Path({str(tmp_path / 'child.log')!r})).start(); "
        "print(p.pid, flush=True); time.sleep(300)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert not _gone(child_pid)

        parent.send_signal(signal.SIGKILL)  # no cleanup runs in the parent
        parent.wait(timeout=10)

        assert _wait_gone(child_pid, 10), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait(timeout=10)


def test_the_log_is_private_and_appended(tmp_path: Path) -> None:
    for word in ("first", "second"):
        child = _python(f"print({word!r})", tmp_path)
        child.start()
        assert child.wait(timeout=30) == 0

    assert stat.S_IMODE(child.log_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(child.log_path.parent.stat().st_mode) == 0o700
    assert child.log_tail(5) == "first\nsecond"
