"""The serving HTTP app (device and cloud): predict in JSON or .npy, model info, health, metrics.

``POST /v1/predict`` takes ``{"rows": ...}`` (nested lists of shape ``[batch, *input_shape]``: rows
of features, or N-d tensors such as ``[batch, 1, 28, 28]``) or a float32 ``.npy`` array of that
shape; it answers ``{"outputs", "version", "precision"}`` plus, for classification models, the
predicted class ``labels`` named by the manifest (a ``.npy`` request gets the outputs as ``.npy``).

Bodies are read raw (never through a pydantic model: parsing with orjson is much faster) with the
size limit enforced while reading. Every refusal is a :class:`~fedge.errors.FedgeError` rendered by
one path as ``{"error": {"code", "message"}}`` with the class's ``http_status``; bad requests are
counted by reason. The handler parses, calls the slot's runtime (through the micro-batcher in cloud
mode; in device mode on the event loop when the model is fast, else in a model thread), and renders;
answers carry ``x-fedge-version`` and ``x-fedge-precision`` headers.

``POST /v1/predict`` is the hot route: :class:`~edge.predict_asgi.PredictEndpoint` answers it below
FastAPI's routing, through the same ``answer`` function the documented FastAPI route uses.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from edge.batching import MicroBatcher
from edge.metrics import METRICS_CONTENT_TYPE, ServingMetrics
from edge.predict_asgi import Answer, BodyReader, PredictEndpoint, read_body
from edge.runtime import InputRejectedError, ModelRuntime
from edge.slot import ModelSlot
from fedge.errors import (
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
# Device mode runs a request's rows on the event loop when the model's fastest observed run of that
# many rows takes at most this long (a thread hop costs ~50-100 us); slower models run in a thread.
INLINE_BUDGET_S = 0.0005
Headers = list[tuple[bytes, bytes]]
_JSON = (b"content-type", b"application/json")


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
    threads: dict[str, ThreadPoolExecutor] = {}

    def model_thread() -> ThreadPoolExecutor:
        if "model" not in threads:
            threads["model"] = ThreadPoolExecutor(1, thread_name_prefix="fedge-model")
        return threads["model"]

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
        thread = threads.pop("model", None)
        if thread is not None:
            thread.shutdown(wait=False)

    # The OpenAPI document is published (clients and fuzzers read it); no interactive docs page.
    app = FastAPI(
        title="fedge serving", docs_url=None, redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan
    )
    app.state.slot, app.state.metrics = slot, metrics

    @app.exception_handler(FedgeError)
    async def _fedge_error(request: Request, exc: FedgeError) -> Response:
        return _error(exc)

    inline_costs: weakref.WeakKeyDictionary[ModelRuntime, float] = weakref.WeakKeyDictionary()
    header_cache: weakref.WeakKeyDictionary[ModelRuntime, tuple[Headers, Headers]] = (
        weakref.WeakKeyDictionary()
    )

    def headers_for(runtime: ModelRuntime, npy: bool) -> Headers:
        """The response headers of ``runtime``'s answers, built once per runtime."""
        both = header_cache.get(runtime)
        if both is None:
            common = [
                (b"x-fedge-version", runtime.version_label.encode("latin-1", "replace")),
                (b"x-fedge-precision", runtime.precision.encode()),
            ]
            both = header_cache[runtime] = (
                [(b"content-type", b"application/json"), *common],
                [(b"content-type", NPY_CONTENT_TYPE.encode()), *common],
            )
        return both[1] if npy else both[0]

    async def answer(npy: bool, read: BodyReader) -> Answer:
        """The one predict path: route, read, parse, validate (drift counted), run, count, render."""
        started = time.perf_counter()
        route = slot.route()
        version = route.runtime.version_label if route is not None else "none"
        try:
            if route is None:
                raise ModelNotLoadedError(NO_MODEL)
            runtime = route.runtime
            body = await read()
            x = _parse_npy(body, runtime) if npy else _parse_json(body, runtime)
            out = await _run(runtime, x)
        except FedgeError as exc:
            if isinstance(exc, RequestRejectedError | InputRejectedError):  # a bad request, by reason
                metrics.record_rejection(exc.reason)
            metrics.record_request(status=exc.http_status, version=version)
            return Answer(exc.http_status, [_JSON], _error_body(exc))
        metrics.record_request(
            status=200, version=runtime.version_label, seconds=time.perf_counter() - started
        )
        after = None
        if route.shadow is not None:
            shadowed = route

            async def after() -> None:  # after the answer was sent, off the event loop
                await asyncio.get_running_loop().run_in_executor(None, slot.run_shadow, shadowed, x, out)

        if npy:
            return Answer(200, headers_for(runtime, True), _npy_bytes(out), after)
        doc: dict[str, Any] = {
            "outputs": out,
            "version": runtime.version_label,
            "precision": runtime.precision,
        }
        labels = runtime.labels(out)
        if labels is not None:
            doc["labels"] = labels
        return Answer(200, headers_for(runtime, False), _dumps(doc), after)

    async def _run(runtime: ModelRuntime, x: np.ndarray) -> np.ndarray:
        """The model's outputs; a model failure is the server's fault: 500, logged, counted.

        Device mode runs the model on the event loop when its fastest observed run of this many
        rows fits ``INLINE_BUDGET_S`` (a thread hop would cost more than the model), else in the
        app's model thread.
        """
        try:
            if batching:
                return await batcher().submit(runtime, x)
            rows = len(x)
            per_row = inline_costs.get(runtime)
            if per_row is not None and per_row * rows <= INLINE_BUDGET_S:
                out, seconds = _timed_predict(runtime, x)
            else:
                out, seconds = await asyncio.get_running_loop().run_in_executor(
                    model_thread(), _timed_predict, runtime, x
                )
            cost = seconds / rows  # the model's own time, not the hop's nor a queue's
            inline_costs[runtime] = min(cost, inline_costs.get(runtime, cost))
            metrics.record_batch(rows)
            return out
        except Exception as exc:
            log.exception("prediction failed on %s", runtime.version_label)
            metrics.record_error("predict")
            raise PredictionFailedError(f"the model failed on these rows: {exc}") from exc

    @app.post("/v1/predict", openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request) -> Response:
        # Served by PredictEndpoint before routing; this route documents it (and answers alike).
        stream = request.stream().__aiter__()

        async def chunks() -> tuple[bytes, bool]:
            try:
                return await stream.__anext__(), True
            except StopAsyncIteration:
                return b"", False

        npy = request.headers.get("content-type", "").startswith(NPY_CONTENT_TYPE)
        done = await answer(
            npy, lambda: read_body(chunks, max_body_bytes, request.headers.get("content-length"))
        )
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

    return app


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


def _timed_predict(runtime: ModelRuntime, x: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    out = runtime.predict(x)
    return out, time.perf_counter() - started


def _npy_bytes(out: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(out, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _error_body(error: FedgeError) -> bytes:
    return _dumps({"error": {"code": error.code, "message": error.message}})


def _error(error: FedgeError) -> Response:
    """The one rendering of a refusal: the class's HTTP status and ``{"error": {"code", "message"}}``."""
    return JSONResponse(
        {"error": {"code": error.code, "message": error.message}}, status_code=error.http_status
    )
