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
mode), and renders.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from edge.batching import MicroBatcher
from edge.metrics import METRICS_CONTENT_TYPE, ServingMetrics
from edge.oip import mount_oip
from edge.runtime import InputRejectedError, ModelRuntime
from edge.slot import ModelSlot, Route
from fedge.errors import (
    BodyTooLargeError,
    EmptyBodyError,
    FedgeError,
    InvalidJsonError,
    InvalidNpyError,
    ModelNotLoadedError,
    PredictionFailedError,
    RequestRejectedError,
)

try:
    import orjson

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    _DECODE_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=lambda o: o.tolist()).encode()

    _DECODE_ERRORS = (ValueError, UnicodeDecodeError)

__all__ = ["NPY_CONTENT_TYPE", "create_serving_app"]

log = logging.getLogger(__name__)
NPY_CONTENT_TYPE = "application/x-npy"
StatusProvider = Callable[[], Mapping[str, Any]]
NO_MODEL = "no model is loaded yet: the edge agent has not activated one"


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
    """
    metrics = metrics or slot.metrics or ServingMetrics()
    slot.attach_metrics(metrics)
    state: dict[str, MicroBatcher] = {}

    def batcher() -> MicroBatcher:
        current = state.get("batcher")
        loop = asyncio.get_running_loop()
        if current is None or current.loop not in (None, loop):  # a new loop (tests): a new batcher
            current = MicroBatcher(
                max_batch=max_batch, max_wait_ms=max_wait_ms, on_batch=metrics.record_batch
            )
            state["batcher"] = current
        return current

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        current = state.pop("batcher", None)
        if current is not None:
            await current.aclose()

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
        started = time.perf_counter()
        route = slot.route()
        version = route.runtime.version_label if route is not None else "none"
        try:
            if route is None:
                raise ModelNotLoadedError(NO_MODEL)
            runtime = route.runtime
            npy = request.headers.get("content-type", "").startswith(NPY_CONTENT_TYPE)
            body = await _read_body(request, max_body_bytes)
            x = _parse_npy(body, runtime) if npy else _parse_json(body, runtime)
            out = await _run(runtime, x)
        except FedgeError as exc:
            if isinstance(exc, RequestRejectedError | InputRejectedError):  # a bad request, by reason
                metrics.record_rejection(exc.reason)
            metrics.record_request(status=exc.http_status, version=version)
            return _error(exc)
        task = BackgroundTask(slot.run_shadow, route, x, out) if route.shadow is not None else None
        metrics.record_request(
            status=200, version=runtime.version_label, seconds=time.perf_counter() - started
        )
        if npy:
            return Response(
                _npy_bytes(out), media_type=NPY_CONTENT_TYPE, headers=_headers(route), background=task
            )
        doc: dict[str, Any] = {
            "outputs": out,
            "version": runtime.version_label,
            "precision": runtime.precision,
        }
        labels = runtime.labels(out)
        if labels is not None:
            doc["labels"] = labels
        payload = _dumps(doc)
        return Response(payload, media_type="application/json", background=task)

    async def _run(runtime: ModelRuntime, x: np.ndarray) -> np.ndarray:
        """The model's outputs; a model failure is the server's fault: 500, logged, counted."""
        try:
            if batching:
                return await batcher().submit(runtime, x)
            out = runtime.predict(x)
            metrics.record_batch(len(x))
            return out
        except Exception as exc:
            log.exception("prediction failed on %s", runtime.version_label)
            metrics.record_error("predict")
            raise PredictionFailedError(f"the model failed on these rows: {exc}") from exc

    @app.get("/v1/model")
    async def model() -> Response:
        runtime = slot.current()
        if runtime is None:
            raise ModelNotLoadedError(NO_MODEL)
        body: dict[str, Any] = {**runtime.info, "secondary": slot.secondary_info(), "batching": batching}
        if status_provider is not None:
            body["agent"] = dict(status_provider())
        return Response(_dumps(body), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        runtime = slot.current()
        body: dict[str, Any] = {"status": "ok" if runtime is not None else "no_model"}
        if runtime is not None:
            body.update(version=runtime.version_label, precision=runtime.precision)
        if status_provider is not None:
            body["agent"] = dict(status_provider())
        return Response(_dumps(body), status_code=200 if runtime else 503, media_type="application/json")

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    # The Open Inference Protocol (KServe v2 / Triton HTTP): same slot, model call and body limit.
    mount_oip(app, slot, metrics=metrics, run=_run, read_body=lambda r: _read_body(r, max_body_bytes))
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it passes ``limit`` bytes (declared or actually sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"request body of {declared} bytes exceeds {limit}", reason="too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(
                f"request body exceeds {limit} bytes: send fewer rows per request", reason="too_large"
            )
        chunks.append(chunk)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body:
        raise EmptyBodyError('the request body is empty: send {"rows": [[...], ...]}', reason="empty_body")
    return body


def _parse_json(body: bytes, runtime: ModelRuntime) -> np.ndarray:
    try:
        doc = _loads(body)
    except _DECODE_ERRORS as exc:
        raise InvalidJsonError(f"the body is not valid JSON: {exc}", reason="invalid_json") from exc
    if not isinstance(doc, dict) or "rows" not in doc:
        raise InputRejectedError(
            'the body must be a JSON object with "rows": [[...], ...] (nested lists of shape '
            f"[batch, {', '.join(str(d) for d in runtime.input_shape)}])",
            reason="missing_rows",
        )
    # Not np.array(rows, dtype=float32): that would quietly turn "0.5" (a string) into a number.
    return runtime.validate(doc["rows"])


def _parse_npy(body: bytes, runtime: ModelRuntime) -> np.ndarray:
    try:
        x = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidNpyError(f"the body is not a readable .npy array: {exc}", reason="invalid_npy") from exc
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise InputRejectedError(
            f"a .npy body must hold a float32 array, got {getattr(x, 'dtype', type(x).__name__)}: "
            "convert with x.astype(np.float32)",
            reason="dtype",
        )
    return runtime.validate(x)


def _npy_bytes(out: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(out, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _headers(route: Route) -> dict[str, str]:
    return {"x-fedge-version": route.runtime.version_label, "x-fedge-precision": route.runtime.precision}


def _error(error: FedgeError) -> Response:
    """The one rendering of a refusal: the class's HTTP status and ``{"error": {"code", "message"}}``."""
    return JSONResponse(
        {"error": {"code": error.code, "message": error.message}}, status_code=error.http_status
    )
