"""The client agent's warm worker: a Unix socket that the per-message ClientApp forwards to.

Flower 1.42 starts a fresh ClientApp process for every message; with torch that is seconds of
imports per round. The agent keeps torch, the task and the validated data loaded in its own
process and serves messages on a Unix socket in its private state folder (mode 0700: only the
institution's own user can connect). The ClientApp process stays light: it imports flwr, sends
the message's records here, and returns what comes back.

Wire format, both ways: a 4-byte big-endian length and a JSON header, then a 4-byte length and
a Flower ``RecordDict`` protobuf. A request header names the message type and carries the run
config; a reply header says ``ok`` or names the error.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from fedge.errors import ConfigError, FederationError
from fedge.private_fs import private_dir

__all__ = ["WorkerHandler", "WorkerServer", "call_worker"]

log = logging.getLogger(__name__)

# (message type, run config as sent, records) -> reply records
WorkerHandler = Callable[[str, str, RecordDict], RecordDict]

_MAX_FRAME = 1 << 31
_MAX_SOCKET_PATH = 107  # sun_path on Linux, without its terminating NUL


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("the peer closed the connection mid-frame")
        chunks += chunk
    return bytes(chunks)


def _recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > _MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes is larger than allowed")
    return _recv_exact(sock, size)


def _encode(records: RecordDict) -> bytes:
    from flwr.common.serde import recorddict_to_proto

    return bytes(recorddict_to_proto(records).SerializeToString())


def _decode(payload: bytes) -> RecordDict:
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    proto = ProtoRecordDict()
    proto.ParseFromString(payload)
    return recorddict_from_proto(proto)


def call_worker(
    socket_path: str | Path, message_type: str, run_config: str, content: RecordDict
) -> RecordDict:
    """Send one message's records to the worker and return its reply records.

    Raises
    ------
    FederationError
        If the worker cannot be reached or reports an error (its message is kept).
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(socket_path))
            _send_frame(sock, json.dumps({"type": message_type, "run_config": run_config}).encode())
            _send_frame(sock, _encode(content))
            header = json.loads(_recv_frame(sock))
            payload = _recv_frame(sock)
    except (OSError, ConnectionError, ValueError) as exc:
        raise FederationError(f"the client agent's worker at {socket_path} is not reachable: {exc}") from exc
    if not header.get("ok"):
        raise FederationError(f"the client agent refused the {message_type} message: {header.get('error')}")
    try:
        return _decode(payload)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise FederationError(
            f"the client agent's reply to the {message_type} message is corrupt: {exc}"
        ) from exc


class _Handler(socketserver.BaseRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            header: dict[str, Any] = json.loads(_recv_frame(sock))
            content = _decode(_recv_frame(sock))
        except (ConnectionError, ValueError) as exc:
            log.warning("worker: malformed request dropped: %s", exc)
            return
        message_type = str(header.get("type", ""))
        try:
            with self.server.lock:  # one message at a time: the model and data are shared
                reply = self.server.handler(message_type, str(header.get("run_config", "")), content)
            encoded = _encode(reply)  # before the header: a reply that cannot be encoded is an error
            _send_frame(sock, json.dumps({"ok": True}).encode())
            _send_frame(sock, encoded)
        except Exception as exc:  # the reason goes back to the ClientApp, and into the run's log
            log.error("worker: %s message failed: %s", message_type, exc)
            _send_frame(sock, json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}).encode())
            _send_frame(sock, b"")


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handler: WorkerHandler) -> None:
        self.handler = handler
        self.lock = threading.Lock()
        super().__init__(path, _Handler)


class WorkerServer:
    """Serve ``handler`` on a Unix socket at ``socket_path`` in a background thread.

    The socket's folder is created with mode 0700 and the socket itself is 0600.
    """

    def __init__(self, socket_path: Path, handler: WorkerHandler) -> None:
        self.socket_path = Path(socket_path)
        self.handler = handler
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WorkerServer:
        """Bind and serve."""
        folder = self.socket_path.parent
        private_dir(folder)
        if self.socket_path.exists():
            self.socket_path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = _UnixServer(str(self.socket_path), self.handler)
        except OSError as exc:
            too_long = len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH
            hint = f" (at most {_MAX_SOCKET_PATH} bytes): choose a shorter --state-dir" if too_long else ""
            raise ConfigError(
                f"cannot serve the worker socket {self.socket_path}: {exc.strerror or exc}{hint}"
            ) from exc
        finally:
            os.umask(old_umask)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fedge-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.socket_path.exists():
            self.socket_path.unlink()

    def __enter__(self) -> WorkerServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
