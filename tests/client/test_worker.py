"""The client agent's warm worker: a real WorkerServer on a Unix socket, real Flower RecordDicts."""

from __future__ import annotations

import contextlib
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from client.worker import WorkerServer, call_worker
from fedge.errors import FederationError


# --- factories ------------------------------------------------------------------------------------
@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: Unix socket paths must stay under 108 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="fw-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _records(scale: float = 1.0) -> RecordDict:
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) * scale, "b": np.ones(3, dtype=np.int64)}
    return RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"loss": 0.25 * scale, "num-examples": 10}),
            "config": ConfigRecord({"lr": 0.1, "tag": "hello"}),
        }
    )


def _doubling_handler(calls: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    """Echo the config, double the arrays, add one to the loss; remember each call."""

    def handle(message_type: str, run_config: str, content: RecordDict) -> RecordDict:
        calls.append((message_type, run_config))
        arrays = content.array_records["arrays"].to_numpy_ndarrays()
        keys = list(content.array_records["arrays"].keys())
        metrics = content.metric_records["metrics"]
        return RecordDict(
            {
                "arrays": ArrayRecord({k: Array(a * 2) for k, a in zip(keys, arrays, strict=True)}),
                "metrics": MetricRecord({"loss": float(metrics["loss"]) + 1.0, "seen": len(calls)}),
                "config": ConfigRecord({**dict(content.config_records["config"]), "type": message_type}),
            }
        )

    return handle


def _send_raw(path: Path, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):  # the server drops the connection; either way it returns
            sock.recv(1024)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


# --- tests ----------------------------------------------------------------------------------------
def test_records_round_trip_through_the_handler(short_dir: Path) -> None:
    calls: list[tuple[str, str]] = []
    path = short_dir / "agent" / "worker.sock"

    with WorkerServer(path, _doubling_handler(calls)):
        reply = call_worker(path, "train", '{"task": "digits"}', _records())

    assert calls == [("train", '{"task": "digits"}')]
    arrays = reply.array_records["arrays"]
    assert list(arrays.keys()) == ["w", "b"]
    w, b = arrays.to_numpy_ndarrays()
    np.testing.assert_array_equal(w, np.arange(6, dtype=np.float32).reshape(2, 3) * 2)
    assert w.dtype == np.float32 and w.shape == (2, 3)
    np.testing.assert_array_equal(b, np.full(3, 2, dtype=np.int64))
    assert b.dtype == np.int64
    assert dict(reply.metric_records["metrics"]) == {"loss": 1.25, "seen": 1}
    assert dict(reply.config_records["config"]) == {"lr": 0.1, "tag": "hello", "type": "train"}


def test_a_handler_error_comes_back_as_a_federation_error(short_dir: Path) -> None:
    def broken(message_type: str, run_config: str, content: RecordDict) -> RecordDict:
        raise ValueError("the data file changed since validation")

    path = short_dir / "worker.sock"
    with WorkerServer(path, broken), pytest.raises(FederationError) as info:
        call_worker(path, "evaluate", "{}", _records())

    assert "the data file changed since validation" in str(info.value)
    assert "ValueError" in str(info.value) and "evaluate" in str(info.value)
    assert info.value.code == "federation_failed"


def test_the_socket_is_private_to_its_user(short_dir: Path) -> None:
    folder = short_dir / "state"
    folder.mkdir(mode=0o755)
    path = folder / "worker.sock"

    with WorkerServer(path, _doubling_handler([])):
        socket_mode = stat.S_IMODE(path.stat().st_mode)
        folder_mode = stat.S_IMODE(folder.stat().st_mode)
        is_socket = stat.S_ISSOCK(path.stat().st_mode)

    assert is_socket
    assert socket_mode == 0o600, oct(socket_mode)
    assert folder_mode == 0o700, oct(folder_mode)


def test_an_unreachable_worker_is_a_federation_error_naming_the_socket(short_dir: Path) -> None:
    path = short_dir / "nobody-listens.sock"

    with pytest.raises(FederationError, match="not reachable") as info:
        call_worker(path, "train", "{}", _records())

    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x89PNG garbage that is no frame at all", id="garbage"),
        pytest.param(b"\xff\xff\xff\xff", id="oversized-length"),
        pytest.param(_frame(b"not json"), id="bad-json-header"),
        pytest.param(_frame(b'{"type": "train"}') + b"\x00\x00", id="truncated-payload"),
        pytest.param(_frame(b'{"type": "train"}') + _frame(b"\xff\xfe\xfd not protobuf"), id="bad-protobuf"),
    ],
)
def test_a_malformed_request_does_not_kill_the_server(short_dir: Path, garbage: bytes) -> None:
    calls: list[tuple[str, str]] = []
    path = short_dir / "worker.sock"

    with WorkerServer(path, _doubling_handler(calls)):
        _send_raw(path, garbage)
        reply = call_worker(path, "train", "{}", _records(scale=3.0))

    assert calls == [("train", "{}")]  # the garbage never reached the handler
    assert reply.metric_records["metrics"]["loss"] == pytest.approx(1.75)


def test_stop_removes_the_socket_and_is_idempotent(short_dir: Path) -> None:
    path = short_dir / "worker.sock"
    server = WorkerServer(path, _doubling_handler([])).start()
    assert path.exists()

    server.stop()
    server.stop()

    assert not path.exists()
    with pytest.raises(FederationError, match="not reachable"):
        call_worker(path, "train", "{}", _records())


def test_a_stale_socket_file_is_replaced_on_start(short_dir: Path) -> None:
    path = short_dir / "worker.sock"
    path.write_bytes(b"left over by a crashed agent")

    with WorkerServer(path, _doubling_handler([])):
        reply = call_worker(path, "train", "{}", _records())

    assert reply.metric_records["metrics"]["loss"] == pytest.approx(1.25)


def test_a_reply_that_cannot_be_encoded_is_a_federation_error(short_dir: Path) -> None:
    def returns_a_plain_dict(message_type: str, run_config: str, content: RecordDict) -> RecordDict:
        return {"not": "a RecordDict"}  # type: ignore[return-value]

    path = short_dir / "worker.sock"
    with WorkerServer(path, returns_a_plain_dict), pytest.raises(FederationError, match="train"):
        call_worker(path, "train", "{}", _records())


def test_a_socket_path_too_long_is_a_config_error_naming_the_limit(tmp_path: Path) -> None:
    from fedge.errors import ConfigError

    deep = tmp_path / ("d" * 120) / "worker.sock"

    with pytest.raises(ConfigError, match=r"at most 107 bytes.*shorter --state-dir"):
        WorkerServer(deep, lambda *_: RecordDict()).start()
