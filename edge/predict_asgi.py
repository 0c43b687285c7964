"""The hot route at the ASGI level: ``POST /v1/predict`` answered without FastAPI's routing.

:class:`PredictEndpoint`, a pure ASGI middleware of the serving app, reads, answers and sends a
``POST /v1/predict`` itself (the body read under the size limit, one :class:`Answer` built by the
serving app's predict function, headers precomputed per runtime); everything else goes to the app,
whose FastAPI route for ``/v1/predict`` stays: the OpenAPI document describes it, and it answers
through the same predict function if a request ever reaches it. The profile this was built from:
FastAPI's request and dependency machinery cost more per request than a batch-1 run of a small
model (see ``benchmarks/serving.py`` and docs/serving-performance.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fedge.errors import BodyTooLargeError, EmptyBodyError

__all__ = ["PREDICT_PATH", "Answer", "BodyReader", "Disconnected", "PredictEndpoint", "read_body"]

PREDICT_PATH = "/v1/predict"
BodyReader = Callable[[], Awaitable[bytes]]
Headers = list[tuple[bytes, bytes]]


class Disconnected(Exception):
    """The client went away before its body was read: nothing is answered."""


@dataclass
class Answer:
    """One response of the predict route: status, headers (content type included), body, and what
    runs after it was sent (a shadow model), if anything."""

    status: int
    headers: Headers
    body: bytes
    after: Callable[[], Awaitable[None]] | None = None


async def read_body(
    chunks: Callable[[], Awaitable[tuple[bytes, bool]]], limit: int, declared: str | None
) -> bytes:
    """The whole body from ``chunks`` (``(data, more)`` pairs), refused with 413 past ``limit`` bytes
    (declared in Content-Length or actually sent) and with 400 when empty."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"request body of {declared} bytes exceeds {limit}", reason="too_large")
    body, more = await chunks()
    if more:
        parts = [body]
        size = len(body)
        while more:
            data, more = await chunks()
            size += len(data)
            if size > limit:
                raise BodyTooLargeError(
                    f"request body exceeds {limit} bytes: send fewer rows per request", reason="too_large"
                )
            parts.append(data)
        body = b"".join(parts)
    if len(body) > limit:
        raise BodyTooLargeError(
            f"request body exceeds {limit} bytes: send fewer rows per request", reason="too_large"
        )
    if not body:
        raise EmptyBodyError('the request body is empty: send {"rows": [[...], ...]}', reason="empty_body")
    return body


PredictFunction = Callable[[bool, BodyReader], Awaitable[Answer]]


class PredictEndpoint:
    """ASGI middleware: ``POST /v1/predict`` through ``predict``; every other request to ``app``.

    Parameters
    ----------
    app : ASGI app
        The serving app (FastAPI): lifespan, the other routes, and ``/v1/predict``'s other methods.
    predict : callable
        ``predict(npy, read_body) -> Answer``: the serving app's one predict function.
    max_body_bytes : int
        Larger bodies get 413 (also enforced while reading).
    npy_content_type : bytes
        The content type that marks a ``.npy`` body.
    """

    def __init__(
        self, app: Any, predict: PredictFunction, *, max_body_bytes: int, npy_content_type: bytes
    ) -> None:
        self.app = app
        self.predict = predict
        self.max_body_bytes = max_body_bytes
        self.npy_content_type = npy_content_type

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        npy = False
        declared: str | None = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                npy = value.startswith(self.npy_content_type)
            elif key == b"content-length":
                declared = value.decode("latin-1")

        async def chunks() -> tuple[bytes, bool]:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            return message.get("body", b""), message.get("more_body", False)

        async def read() -> bytes:
            return await read_body(chunks, self.max_body_bytes, declared)

        try:
            answer = await self.predict(npy, read)
        except Disconnected:
            return
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [*answer.headers, (b"content-length", str(len(answer.body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})
        if answer.after is not None:
            await answer.after()
