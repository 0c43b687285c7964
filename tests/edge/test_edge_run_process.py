"""A real ``fedge edge run`` process: serves its stored model offline, and stops promptly on SIGTERM
while its registry is unreachable (a closed port on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from edge.state import EdgeState, VersionRecord
from fedge.crypto import generate_private_key, save_public_key
from fedge.release_format import ReleaseIdentity
from fedge.tasks import TaskConfig, get_task
from registry import ModelVersionCreate, export_onnx, manifest_preprocessing
from registry.bundle import prepare_release, write_bundle

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[list[float]]]:
    """A state folder whose active version is a signed digits release, and the release key."""
    folder = tmp_path_factory.mktemp("device")
    torch.manual_seed(0)
    task = get_task("digits")
    cfg = TaskConfig(hidden=16)
    rows = task.split_holdout(cfg)[1].x
    key = generate_private_key()
    release = prepare_release(
        version=ModelVersionCreate("digits", "run-1", 1, (), {}, {}, {"task": "digits"}),
        onnx_bytes=export_onnx(task.build_model(cfg), task.input_spec.shape),
        private_key=key,
        reference_inputs=rows,
        preprocessing=manifest_preprocessing(task),
        identity=ReleaseIdentity("digits", 1),
    )
    bundle = write_bundle(
        folder / "d.bundle", manifest=release.manifest, signature=release.signature, files=release.files
    )
    data = bundle.read_bytes()
    state = EdgeState(folder / "state")
    state.save_bundle("digits", 1, data)
    state.activate(VersionRecord("digits", 1, None, hashlib.sha256(data).hexdigest()))
    public = save_public_key(key.public_key(), folder / "signer.pub")
    return folder / "state", public, rows[:2].tolist()


@pytest.fixture
def edge_run(
    device: tuple[Path, Path, list[list[float]]], request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    state, public, _ = device
    token_file = state.parent / "metrics-token"  # "{token_file}" in a param: a token written here
    token_file.write_text("device-metrics-7f3a\n")
    token_file.chmod(0o600)
    extra = [a.format(token_file=token_file) for a in getattr(request, "param", [])]
    port = _free_port()
    closed = _free_port()  # nothing listens: the registry is unreachable
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedge.cli.main",
            "edge",
            "run",
            "--registry",
            f"http://127.0.0.1:{closed}",
            "--public-key",
            str(public),
            "--dir",
            str(state),
            "--port",
            str(port),
            "--poll-interval",
            "0.2",
            "--report-interval",
            "0.5",
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _predict(port: int, rows: list[list[float]]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/predict", json.dumps({"rows": rows}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _wait_for_first_answer(proc: subprocess.Popen[bytes], port: int, rows: list[list[float]]) -> tuple:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        try:
            return _predict(port, rows)
        except OSError:
            time.sleep(0.02)
    raise AssertionError("fedge edge run never answered")


def test_sigterm_while_the_registry_is_unreachable_exits_promptly_and_cleanly(
    edge_run: tuple[subprocess.Popen[bytes], int], device: tuple[Path, Path, list[list[float]]]
) -> None:
    proc, port = edge_run
    status, headers, body = _wait_for_first_answer(proc, port, device[2])
    time.sleep(1.0)  # polls and reports fail and back off meanwhile

    assert status == 200 and headers["x-fedge-version"] == "digits:1"
    assert len(json.loads(body)["outputs"]) == 2
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=5)  # a generous bound: the figure measured is in the benchmark

    assert code == 0, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    assert "Traceback" not in proc.stderr.read().decode()  # type: ignore[union-attr]


@pytest.mark.parametrize("edge_run", [["--metrics-token-file", "{token_file}"]], indirect=True)
def test_metrics_take_the_token_from_the_file_the_cli_names(
    edge_run: tuple[subprocess.Popen[bytes], int], device: tuple[Path, Path, list[list[float]]]
) -> None:
    proc, port = edge_run
    status, _, _ = _wait_for_first_answer(proc, port, device[2])
    assert status == 200

    def metrics(headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/metrics", headers=headers)
            return conn.getresponse().status
        finally:
            conn.close()

    assert metrics({}) == 401
    assert metrics({"Authorization": "Bearer device-metrics-7f3a"}) == 200


@pytest.mark.parametrize(
    ("content", "problem"), [(None, "cannot be read"), ("two words\n", "must hold one token")]
)
def test_a_bad_metrics_token_file_is_one_line_and_exit_2(
    tmp_path: Path, device: tuple[Path, Path, list[list[float]]], content: str | None, problem: str
) -> None:
    state, public, _ = device
    file = tmp_path / "token"
    if content is not None:
        file.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "edge", "run", "--registry", "http://127.0.0.1:9",
         "--public-key", str(public), "--dir", str(state), "--metrics-token-file", str(file)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr and "words" not in result.stderr
