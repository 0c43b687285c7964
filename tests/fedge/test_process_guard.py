"""fedge.process_guard: what a guarded command starts never outlives it (real processes, Linux)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from fedge.errors import FederationError
from fedge.process_guard import guarded_command
from fedge.processes import ManagedProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="subreapers are Linux's")

REPO = Path(__file__).resolve().parents[2]


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "prog.sh"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o700)
    return path


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still running (not zombies) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_a_sigkilled_parent_takes_the_program_and_its_orphans_with_it(tmp_path: Path) -> None:
    # The program detaches a grandchild (as Flower's SuperExec outlives a dead SuperNode), then waits.
    prog = _script(tmp_path, "( sleep 120 & )\nsleep 120\n")
    parent_code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from fedge.processes import ManagedProcess
        p = ManagedProcess([{str(prog)!r}], log_path=Path({str(tmp_path / "p.log")!r}),
                           guard_descendants=True).start()
        print(p.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        guard = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 20
        while len(guard.children(recursive=True)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = guard.children(recursive=True)
        assert len(tree) == 3, tree  # the shell, its sleep, and the orphaned sleep (adopted by the guard)
        assert all(p.ppid() == guard.pid for p in tree if p.name() == "sleep" and p.ppid() != tree[0].pid)
    finally:
        parent.kill()
        parent.wait(timeout=10)
    assert _gone_within([guard.pid, *(p.pid for p in tree)], 15) == []


def test_the_programs_exit_code_and_signal_pass_through(tmp_path: Path) -> None:
    assert subprocess.run(guarded_command(["sh", "-c", "exit 49"]), timeout=30).returncode == 49
    assert subprocess.run(guarded_command(["sh", "-c", "kill -KILL $$"]), timeout=30).returncode == -9
    missing = subprocess.run(guarded_command([str(tmp_path / "nope")]), capture_output=True, text=True)
    assert missing.returncode == 127 and "cannot start" in missing.stderr


def test_what_the_program_left_behind_is_stopped_when_it_exits(tmp_path: Path) -> None:
    marker = tmp_path / "orphan.pid"
    prog = _script(tmp_path, f"sleep 120 &\necho $! > {marker}\nexit 3\n")
    proc = ManagedProcess([str(prog)], log_path=tmp_path / "p.log", guard_descendants=True).start()
    assert proc.wait(timeout=30) == 3
    assert _gone_within([int(marker.read_text())], 10) == []


def test_stop_ends_the_guard_and_everything_under_it(tmp_path: Path) -> None:
    prog = _script(tmp_path, "( sleep 120 & )\ntrap '' TERM\nsleep 120\n")  # the shell ignores SIGTERM
    proc = ManagedProcess([str(prog)], log_path=tmp_path / "p.log", guard_descendants=True).start()
    assert proc.pid is not None
    guard = psutil.Process(proc.pid)
    deadline = time.monotonic() + 20
    while len(guard.children(recursive=True)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = [p.pid for p in guard.children(recursive=True)]
    proc.stop(timeout=10)
    assert _gone_within([proc.pid, *tree], 10) == []


def test_a_missing_program_is_named_before_anything_starts(tmp_path: Path) -> None:
    proc = ManagedProcess(["fedge-no-such-program"], log_path=tmp_path / "p.log", guard_descendants=True)
    with pytest.raises(FederationError, match="fedge-no-such-program is neither beside this Python"):
        proc.start()
