"""The coordinator's SuperLink is its own: found beside the interpreter, refused on a taken port,
a stale one of its state folder stopped, and dead with a SIGKILLed coordinator."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from coordinator import ManagedSuperLink
from fedge.errors import FederationError
from fedge.processes import flower_env, free_port, stop_process_tree
from fedge.tls import init_federation_tls
from tests.processes import processes_under

ROOT = Path(__file__).resolve().parents[2]
BARE_PATH = "/usr/bin:/bin"  # no venv on it: what systemd, cron and a non-activated shell give


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(predicate())  # type: ignore[operator]


def _superlinks_under(root: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(os.path.basename(c) == "flower-superlink" for c in cmd[:2]) and str(root) in " ".join(cmd):
            with_status = proc.status() if proc.is_running() else psutil.STATUS_ZOMBIE
            if with_status != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _fedge_env() -> dict[str, str]:
    """The environment of a `fedge` run by full path: no venv on PATH, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDGE_", "VIRTUAL_ENV"))}
    env.update({"PATH": BARE_PATH, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    init_federation_tls(tmp_path / "tls", ["localhost"])
    return tmp_path / "tls"


def _serve(tmp_path: Path, tls_dir: Path, superlink_port: int) -> subprocess.Popen[str]:
    # sys.executable by full path, PATH without the venv: `.venv/bin/fedge` run as systemd would.
    command = [
        sys.executable, "-m", "fedge.cli.main", "coordinator", "serve",
        "--tls-dir", str(tls_dir), "--state-dir", str(tmp_path / "state"),
        "--port", str(free_port()), "--superlink-port", str(superlink_port),
        f"registry.root={tmp_path / 'reg'}",
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=_fedge_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# --- unit -----------------------------------------------------------------------------------------
def test_flower_programs_are_found_beside_the_interpreter_before_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedge._managed_process import resolve_program

    monkeypatch.setenv("PATH", BARE_PATH)

    assert resolve_program("flower-superlink") == str(Path(sys.executable).parent / "flower-superlink")
    assert resolve_program("flower-supernode") == str(Path(sys.executable).parent / "flower-supernode")
    assert resolve_program("sh") == "/usr/bin/sh" or resolve_program("sh") == "/bin/sh"
    assert resolve_program("fedge-no-such-program") == "fedge-no-such-program"
    assert resolve_program("/bin/true") == "/bin/true"


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        link = ManagedSuperLink(tmp_path / "sl", port=port)

        with pytest.raises(FederationError, match=rf"port {port} on 127.0.0.1 is already in use"):
            link.start()

    assert link.process is None and processes_under(tmp_path) == []


# --- real processes -------------------------------------------------------------------------------
@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process (a plain HTTP server answering /health) listens on."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert _wait(lambda: _listening(port), 10), "the port holder did not start"
    yield port
    server.kill()
    server.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_a_coordinator_whose_superlink_port_is_taken_fails_naming_the_port(
    tmp_path: Path, tls_dir: Path, held_port: int
) -> None:
    serve = _serve(tmp_path, tls_dir, held_port)
    _, err = serve.communicate(timeout=120)

    assert serve.returncode == 1, err
    assert f"port {held_port} on 127.0.0.1 is already in use" in err
    assert "--superlink-port" in err and "Traceback" not in err
    assert _superlinks_under(tmp_path) == []


@pytest.mark.slow
def test_a_sigkilled_coordinator_run_by_full_path_takes_its_superlink_with_it(
    tmp_path: Path, tls_dir: Path
) -> None:
    serve = _serve(tmp_path, tls_dir, free_port())
    try:
        assert serve.stderr is not None
        line = ""
        while "operator API on" not in line:
            line = serve.stderr.readline()
            assert line or serve.poll() is None, f"the coordinator exited: {serve.stderr.read()}"
        links = _superlinks_under(tmp_path)
        assert len(links) == 1, "the SuperLink was found beside the interpreter with a bare PATH"
        pid_file = (tmp_path / "state" / "superlink" / "superlink.pid").read_text().split()
        assert pid_file == [str(links[0].pid), str(serve.pid)]

        serve.send_signal(signal.SIGKILL)  # no cleanup runs in the coordinator
        serve.wait(timeout=10)

        assert _wait(lambda: _gone(links[0].pid), 10), "the SuperLink outlived its SIGKILLed coordinator"
    finally:
        serve.kill()
        serve.wait(timeout=10)
        for proc in _superlinks_under(tmp_path):
            stop_process_tree(proc.pid)


@pytest.mark.slow
def test_a_stale_superlink_of_the_state_folder_is_stopped_and_the_port_reused(tmp_path: Path) -> None:
    home = tmp_path / "sl"
    first = ManagedSuperLink(home)
    (home / "flwr-home").mkdir(parents=True)
    # A SuperLink left by a coordinator that died without its parent-death signal (another OS).
    stale = subprocess.Popen(
        [str(Path(sys.executable).parent / "flower-superlink"), *first.command()[1:]],
        env=flower_env(home / "flwr-home"),
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_owner.wait(timeout=30)  # the coordinator that started it, killed
        first.pid_path.write_text(f"{stale.pid} {dead_owner.pid}\n")
        assert _wait(lambda: _listening(first.port), 60), "the stale SuperLink did not start"

        with ManagedSuperLink(home, port=first.port) as second:
            assert stale.wait(timeout=15) is not None, "the stale SuperLink was not stopped"
            assert second.healthy() and second.owns_port()
            assert second.process is not None
            assert second.pid_path.read_text().split() == [str(second.process.pid), str(os.getpid())]
        assert not second.pid_path.exists()
    finally:
        if stale.poll() is None:
            stop_process_tree(stale.pid)
    assert processes_under(tmp_path) == []


def test_a_pid_file_naming_another_program_is_left_alone(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        link = ManagedSuperLink(tmp_path / "sl")
        link.home.mkdir(parents=True)
        link.pid_path.write_text(f"{bystander.pid} {os.getpid()}\n")

        assert link.stop_stale() is None
        assert bystander.poll() is None and not link.pid_path.exists()
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


@pytest.mark.slow
def test_a_superlink_whose_coordinator_is_alive_is_not_taken_over(tmp_path: Path) -> None:
    home = tmp_path / "sl"
    with ManagedSuperLink(home) as running:
        assert running.process is not None
        pid = running.process.pid
        # A second coordinator on the same state folder, its SuperLink's owner (this process) alive.
        home_copy = home / "superlink.pid"
        home_copy.write_text(f"{pid} {os.getppid()}\n")

        with pytest.raises(FederationError, match=rf"another fedge process \(pid {os.getppid()}\) runs"):
            ManagedSuperLink(home, port=running.port).start()
        assert running.healthy(), "the running SuperLink was left alone"
    assert processes_under(tmp_path) == []


@pytest.mark.slow
def test_a_deployment_superlink_runs_under_the_guard_and_its_pid_file_names_the_superlink(
    tmp_path: Path,
) -> None:
    # The guard (fedge.process_guard, tested on its own) adopts what the SuperLink starts (a run's
    # flwr-serverapp) and stops it with the SuperLink.
    with ManagedSuperLink(tmp_path / "sl", simulation=False) as link:
        assert link.process is not None and link.process.pid is not None
        guard = psutil.Process(link.process.pid)
        assert "fedge.process_guard" in guard.cmdline()
        (superlink,) = guard.children()
        assert os.path.basename(superlink.cmdline()[1]) == "flower-superlink"
        assert link.pid_path.read_text().split() == [str(superlink.pid), str(os.getpid())]
        assert link.healthy() and link.owns_port()
    assert not link.pid_path.exists()
    assert _wait(lambda: processes_under(tmp_path) == [], 15), processes_under(tmp_path)
    assert _gone(superlink.pid) and _gone(guard.pid)
