"""A 200 MB body over real HTTP to ``fedge coordinator serve`` (uvicorn on 127.0.0.1).

Unauthenticated: 401 without the body being read. Authenticated: 413 once the body passes the
route's limit. Either way the server's memory does not grow with the body.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from registry import RegistryConfig
from tests.apps import role_tokens

pytestmark = pytest.mark.slow

BODY_BYTES = 200 * 2**20
CHUNK = b"x" * 2**20
MAX_GROWTH = 50 * 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, psutil.Process, dict[str, str]]]:
    root = tmp_path / "reg"
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedge.cli.main", "coordinator", "serve", "--port", str(port),
         "--state-dir", str(tmp_path / "state"), f"registry.root={root}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coordinator did not start: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.2)
        tokens = role_tokens(RegistryConfig(root=str(root)).resolved_database_url())
        yield url, psutil.Process(proc.pid), tokens
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stream() -> Iterator[bytes]:
    for _ in range(BODY_BYTES // len(CHUNK)):
        yield CHUNK


def _post(url: str, headers: dict[str, str], *, declare_length: bool) -> int:
    """POST 200 MB (streamed from a generator, never held here); the answer's status."""
    if declare_length:
        headers = {**headers, "content-length": str(BODY_BYTES)}
    response = httpx.post(f"{url}/api/v1/runs", content=_stream(), headers=headers, timeout=120)
    return response.status_code


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_200mb_unauthenticated_post_is_a_401_without_reading_it(
    server: tuple[str, psutil.Process, dict[str, str]], declare_length: bool
) -> None:
    url, process, _ = server
    before = process.memory_info().rss

    status = _post(url, {"content-type": "application/json"}, declare_length=declare_length)

    grown = process.memory_info().rss - before
    assert status == 401
    assert grown < MAX_GROWTH, f"the server grew by {grown / 2**20:.0f} MiB"
    # The answer itself, from the same kind of request with a small body
    small = httpx.post(f"{url}/api/v1/runs", content=b"{}", headers={"content-type": "application/json"})
    assert small.status_code == 401
    assert small.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_200mb_authenticated_post_is_a_413(
    server: tuple[str, psutil.Process, dict[str, str]], declare_length: bool
) -> None:
    url, process, tokens = server
    before = process.memory_info().rss
    headers = {"content-type": "application/json", "authorization": f"Bearer {tokens['operator']}"}

    status = _post(url, headers, declare_length=declare_length)

    grown = process.memory_info().rss - before
    assert status == 413
    assert grown < MAX_GROWTH, f"the server grew by {grown / 2**20:.0f} MiB"
    assert httpx.get(f"{url}/healthz").status_code == 200  # still serving
