"""The serving HTTP app (device and cloud): predict in JSON or .npy, model info, health, metrics.

``POST /v1/predict`` takes ``{"rows": ...}`` (nested lists of shape ``[batch, *input_shape]``: rows
of features, or N-d tensors such as ``[batch, 1, 28, 28]``) or a float32 ``.npy`` array of that
shape; it answers ``{"outputs", "version", "precision"}`` plus, for classification models, the
predicted class ``labels`` named by the manifest (a ``.npy`` request gets the outputs as ``.npy``).
The Open Inference Protocol's ``/v2`` routes (:mod:`edge.oip`) answer through the same model call.

Bodies are read raw (never through a pydantic model: parsing with orjson is much faster) with the
size limit enforced while reading. Every refusal is a :class:`~fedge.errors.FedgeError` rendered by
one path as ``{"error": {"code", "message"}}`` with the class's ``http_status``; bad requests are
counted by reason. The handler parses, calls the slot's runtime (through the micro-batcher in cloud
mode; in device mode on the event loop when the model is fast, else in a model thread), and renders;
answers carry ``x-fedge-version`` and ``x-fedge-precision`` headers.

``POST /v1/predict`` is the hot route: :class:`~edge.predict_asgi.PredictEndpoint` answers it below
FastAPI's routing, through the same :meth:`~edge.predictor.Predictor.answer` the documented FastAPI
route uses.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from edge.metrics import METRICS_CONTENT_TYPE, ServingMetrics
from edge.oip import mount_oip
from edge.predict_asgi import PredictEndpoint, read_body
from edge.predictor import NO_MODEL, NPY_CONTENT_TYPE, Predictor, dumps
from edge.slot import ModelSlot
from fedge.errors import AuthenticationError, FedgeError, ModelNotLoadedError

__all__ = ["NPY_CONTENT_TYPE", "create_serving_app"]

StatusProvider = Callable[[], Mapping[str, Any]]


_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}
# The body is read raw (not through a pydantic model), so its schema is stated here.
_PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "rows": {
                            "type": "array",
                            "description": "nested lists of shape [batch, *input_shape]",
                            "items": {},
                        }
                    },
                    "required": ["rows"],
                }
            },
            NPY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {
            "description": "The outputs, version and precision (and labels for a classifier).",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "outputs": {"type": "array"},
                            "version": {"type": "string"},
                            "precision": {"type": "string"},
                            "labels": {"type": "array"},
                        },
                        "required": ["outputs", "version", "precision"],
                    }
                },
                NPY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **{
            code: {"description": what, "content": {"application/json": {"schema": _ERROR}}}
            for code, what in (
                ("413", "The body is larger than the server takes."),
                ("422", "The rows are not what the model takes (the message says how)."),
                ("503", "No model is loaded yet."),
            )
        },
    },
}


def create_serving_app(
    slot: ModelSlot,
    *,
    batching: bool,
    max_batch: int = 32,
    max_wait_ms: float = 2.0,
    max_body_bytes: int = 10 * 2**20,
    status_provider: StatusProvider | None = None,
    metrics: ServingMetrics | None = None,
    predictor: Predictor | None = None,
    metrics_token: str | None = None,
) -> FastAPI:
    """Build the serving app over ``slot``.

    Parameters
    ----------
    slot : ModelSlot
        Where the runtime that answers is taken from, per request.
    batching : bool
        Cloud mode: micro-batch concurrent requests and run the model in a thread. Device mode
        (False): run each request's rows directly.
    max_batch, max_wait_ms : int, float
        Micro-batching limits (rows per model run, longest wait of a queued request).
    max_body_bytes : int
        Larger bodies get 413; enforced while reading, not from Content-Length alone.
    status_provider : callable, optional
        Returns extra status (for example the edge agent's) shown by ``/healthz`` and ``/v1/model``.
    metrics : ServingMetrics, optional
        The metrics to record into; the slot's own, or a new private registry, by default.
    predictor : Predictor, optional
        The predict path to serve (``fedge edge run`` builds it first, to answer before this app
        exists); by default one over ``slot`` and ``metrics`` with the settings above.
    metrics_token : str, optional
        When set, ``/metrics`` answers only ``Authorization: Bearer <metrics_token>`` (401
        otherwise); by default it is open, like any Prometheus exporter on a private port.
    """
    metrics = metrics or slot.metrics or ServingMetrics()
    slot.attach_metrics(metrics)
    if predictor is None:
        predictor = Predictor(slot, metrics, batching=batching, max_batch=max_batch, max_wait_ms=max_wait_ms)
    answer = predictor.answer

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await predictor.aclose()

    # The OpenAPI document is published (clients and fuzzers read it); no interactive docs page.
    app = FastAPI(
        title="fedge serving", docs_url=None, redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan
    )
    app.state.slot, app.state.metrics = slot, metrics

    @app.exception_handler(FedgeError)
    async def _fedge_error(request: Request, exc: FedgeError) -> Response:
        return _error(exc)

    @app.post("/v1/predict", openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request) -> Response:
        # Served by PredictEndpoint before routing; this route documents it (and answers alike).
        npy = request.headers.get("content-type", "").startswith(NPY_CONTENT_TYPE)
        done = await answer(npy, lambda: _request_body(request, max_body_bytes))
        return Response(
            done.body,
            status_code=done.status,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in done.headers},
            background=BackgroundTask(done.after) if done.after is not None else None,
        )

    app.add_middleware(
        PredictEndpoint,
        predict=answer,
        max_body_bytes=max_body_bytes,
        npy_content_type=NPY_CONTENT_TYPE.encode(),
    )

    @app.get("/v1/model")
    async def model() -> Response:
        runtime = slot.current()
        if runtime is None:
            raise ModelNotLoadedError(NO_MODEL)
        body: dict[str, Any] = {**runtime.info, "secondary": slot.secondary_info(), "batching": batching}
        if status_provider is not None:
            body["agent"] = dict(status_provider())
        return Response(dumps(body), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        runtime = slot.current()
        body: dict[str, Any] = {"status": "ok" if runtime is not None else "no_model"}
        if runtime is not None:
            body.update(version=runtime.version_label, precision=runtime.precision)
        if status_provider is not None:
            body["agent"] = dict(status_provider())
        return Response(dumps(body), status_code=200 if runtime else 503, media_type="application/json")

    expected = f"Bearer {metrics_token}".encode() if metrics_token else None

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                refused = _error(AuthenticationError("/metrics needs this device's metrics bearer token"))
                refused.headers["WWW-Authenticate"] = "Bearer"
                return refused
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    # The Open Inference Protocol (KServe v2 / Triton HTTP): same slot, model call and body limit.
    mount_oip(
        app, slot, metrics=metrics, run=predictor.run, read_body=lambda r: _request_body(r, max_body_bytes)
    )
    return app


def _error(error: FedgeError) -> Response:
    """The one rendering of a refusal: the class's HTTP status and ``{"error": {"code", "message"}}``."""
    return JSONResponse(
        {"error": {"code": error.code, "message": error.message}}, status_code=error.http_status
    )


async def _request_body(request: Request, limit: int) -> bytes:
    """A FastAPI request's body through :func:`edge.predict_asgi.read_body` (413 past ``limit``)."""
    stream = request.stream().__aiter__()

    async def chunks() -> tuple[bytes, bool]:
        try:
            return await stream.__anext__(), True
        except StopAsyncIteration:
            return b"", False

    return await read_body(chunks, limit, request.headers.get("content-length"))
