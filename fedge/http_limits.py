"""Request guard for HTTP services: authenticate before the body, bound the body, refuse lone surrogates.

:class:`RequestGuard` is plain ASGI (no web framework imported: the kernel serves nothing itself);
a service wraps its app in it. For a request that carries a body it

1. asks ``authenticate`` (headers only) first: a refusal is answered, 401, without reading a byte
   of the body;
2. answers 413 at once when ``Content-Length`` declares more than the route's limit, and otherwise
   reads the body while counting, answering 413 as soon as the count passes the limit (a chunked
   or lying client cannot make the server hold more than the limit);
3. refuses with 422 a JSON body whose strings hold a lone UTF-16 surrogate (``"\\ud800"``): valid
   JSON, but no UTF-8 text, so it would fail later, at the database or the encoder, as a 500;
4. hands the app the buffered body.

Refusals are ``{"error": {"code", "message"}}`` like every fedge error body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_BODY_BYTES",
    "MAX_COUNT",
    "MAX_ID",
    "Authenticator",
    "RequestGuard",
    "RequestLimits",
    "lone_surrogate_path",
]

# Integers a client may send: ids (database rows, version numbers, sequence numbers) fit SQLite's
# signed 64-bit INTEGER and a JSON number's exact range; counts and offsets fit 32 bits.
MAX_ID = 2**53 - 1
MAX_COUNT = 2**31 - 1

DEFAULT_BODY_BYTES = 1 << 20  # 1 MiB: every JSON route of the operator API

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Headers (lower-case names) -> None to let the request in, or the message of a 401.
Authenticator = Callable[[Mapping[str, str]], Awaitable[str | None]]


@dataclass(frozen=True)
class RequestLimits:
    """Body-size limits: ``default_body_bytes``, or the longest matching path prefix of ``routes``."""

    default_body_bytes: int = DEFAULT_BODY_BYTES
    routes: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for limit in (self.default_body_bytes, *self.routes.values()):
            if not isinstance(limit, int) or limit < 0:
                raise ValueError(f"a body limit must be a byte count >= 0, got {limit!r}")

    def body_bytes(self, path: str) -> int:
        """The body limit of a request to ``path``."""
        best, limit = -1, self.default_body_bytes
        for prefix, value in self.routes.items():
            if path.startswith(prefix) and len(prefix) > best:
                best, limit = len(prefix), value
        return limit


class _TooLarge(Exception):
    pass


# A JSON escape of a UTF-16 surrogate: only a body holding one can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class RequestGuard:
    """ASGI middleware: authentication before the body, a streaming body limit, no lone surrogates."""

    def __init__(
        self, app: ASGIApp, *, limits: RequestLimits | None = None, authenticate: Authenticator | None = None
    ) -> None:
        self.app = app
        self.limits = limits or RequestLimits()
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        declared = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        if not chunked and declared in (None, "0"):
            await self.app(scope, receive, send)  # no body: nothing to guard
            return
        if self.authenticate is not None:
            refusal = await self.authenticate(headers)
            if refusal is not None:
                await _refuse(send, 401, "unauthenticated", refusal, {"www-authenticate": "Bearer"})
                return
        limit = self.limits.body_bytes(scope.get("path", ""))
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            what = "an invalid Content-Length" if not declared.isdigit() else f"{declared} bytes"
            status = 400 if not declared.isdigit() else 413
            await _refuse(
                send,
                status,
                "body_too_large" if status == 413 else "bad_request",
                f"request body of {what}: this route takes at most {limit} bytes",
            )
            return
        try:
            body = await _read_body(receive, limit)
        except _TooLarge:
            await _refuse(
                send,
                413,
                "body_too_large",
                f"request body exceeds {limit} bytes: this route takes at most {limit} bytes",
            )
            return
        if body is None:  # the client went away
            return
        content_type = headers.get("content-type", "")
        # FastAPI reads a body without a content type as JSON too.
        if _SURROGATE_ESCAPE.search(body) and (not content_type or "json" in content_type):
            where = lone_surrogate_path(body)
            if where is not None:
                await _refuse(
                    send,
                    422,
                    "invalid_text",
                    f"{where}: the string holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                    "which is not text: send valid UTF-8",
                )
                return
        await self.app(scope, _replay(body, receive), send)


def lone_surrogate_path(body: bytes) -> str | None:
    """Where (``body.moves[0].reason``) a JSON body holds a string with a lone surrogate, if anywhere."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # not JSON: the app answers that
    stack: list[tuple[str, Any]] = [("body", doc)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not _is_text(value):
                return where
        elif isinstance(value, dict):
            for k, v in value.items():
                if not _is_text(k):
                    return f"{where} (a key)"
                stack.append((f"{where}.{k}", v))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect

    return replay


async def _refuse(
    send: Send, status: int, code: str, message: str, extra: Mapping[str, str] | None = None
) -> None:
    payload = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
