"""The predict path of the serving app, free of FastAPI: read, parse, validate, run, count, render.

:class:`Predictor` answers one ``POST /v1/predict`` as an :class:`~edge.predict_asgi.Answer`; the
serving app's hot route (:class:`~edge.predict_asgi.PredictEndpoint`) and its documented FastAPI
route both call :meth:`Predictor.answer`. Importing this module does not import FastAPI, so that
``fedge edge run`` can answer its first prediction while the rest of the app is still being built.

Device mode runs a request's rows on the event loop when the model's fastest observed run of that
many rows fits :data:`INLINE_BUDGET_S` (a thread hop would cost more than the model), else in one
model thread; cloud mode micro-batches (:class:`~edge.batching.MicroBatcher`).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from edge.batching import MicroBatcher
from edge.metrics import ServingMetrics
from edge.predict_asgi import Answer, BodyReader
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

    def loads(data: bytes) -> Any:
        return orjson.loads(data)

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    _DECODE_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it

    def loads(data: bytes) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=lambda o: o.tolist()).encode()

    _DECODE_ERRORS = (ValueError, UnicodeDecodeError)

__all__ = ["INLINE_BUDGET_S", "NO_MODEL", "NPY_CONTENT_TYPE", "Predictor", "dumps", "error_body", "loads"]

log = logging.getLogger("edge.server")
NPY_CONTENT_TYPE = "application/x-npy"
NO_MODEL = "no model is loaded yet: the edge agent has not activated one"
# Device mode runs a request's rows on the event loop when the model's fastest observed run of that
# many rows takes at most this long (a thread hop costs ~50-100 us); slower models run in a thread.
INLINE_BUDGET_S = 0.0005
Headers = list[tuple[bytes, bytes]]
_JSON = (b"content-type", b"application/json")


class Predictor:
    """Answers prediction requests from ``slot``'s runtime, counting into ``metrics``.

    Parameters
    ----------
    slot : ModelSlot
        Where the runtime that answers is taken from, per request.
    metrics : ServingMetrics
        Requests, latency, rejections by reason, model runs and failures are counted here.
    batching : bool
        Cloud mode: micro-batch concurrent requests. Device mode (False): run each request's rows.
    max_batch, max_wait_ms : int, float
        Micro-batching limits (rows per model run, longest wait of a queued request).
    """

    def __init__(
        self,
        slot: ModelSlot,
        metrics: ServingMetrics,
        *,
        batching: bool,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
    ) -> None:
        self.slot, self.metrics, self.batching = slot, metrics, batching
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        self._batcher: MicroBatcher | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._inline_costs: weakref.WeakKeyDictionary[ModelRuntime, float] = weakref.WeakKeyDictionary()
        self._headers: weakref.WeakKeyDictionary[ModelRuntime, tuple[Headers, Headers]] = (
            weakref.WeakKeyDictionary()
        )

    async def answer(self, npy: bool, read: BodyReader) -> Answer:
        """The one predict path: route, read, parse, validate (drift counted), run, count, render."""
        metrics = self.metrics
        started = time.perf_counter()
        route = self.slot.route()
        version = route.runtime.version_label if route is not None else "none"
        try:
            if route is None:
                raise ModelNotLoadedError(NO_MODEL)
            runtime = route.runtime
            body = await read()
            x = parse_npy(body, runtime) if npy else parse_json(body, runtime)
            out = await self._run(runtime, x)
        except FedgeError as exc:
            if isinstance(exc, RequestRejectedError | InputRejectedError):  # a bad request, by reason
                metrics.record_rejection(exc.reason)
            metrics.record_request(status=exc.http_status, version=version)
            return Answer(exc.http_status, [_JSON], error_body(exc))
        metrics.record_request(
            status=200, version=runtime.version_label, seconds=time.perf_counter() - started
        )
        after = None
        if route.shadow is not None:
            slot, shadowed = self.slot, route

            async def after() -> None:  # after the answer was sent, off the event loop
                await asyncio.get_running_loop().run_in_executor(None, slot.run_shadow, shadowed, x, out)

        if npy:
            return Answer(200, self._headers_for(runtime, True), npy_bytes(out), after)
        doc: dict[str, Any] = {
            "outputs": out,
            "version": runtime.version_label,
            "precision": runtime.precision,
        }
        labels = runtime.labels(out)
        if labels is not None:
            doc["labels"] = labels
        return Answer(200, self._headers_for(runtime, False), dumps(doc), after)

    async def aclose(self) -> None:
        """Run what the batcher holds and release the model thread."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await batcher.aclose()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)

    def _headers_for(self, runtime: ModelRuntime, npy: bool) -> Headers:
        """The response headers of ``runtime``'s answers, built once per runtime."""
        both = self._headers.get(runtime)
        if both is None:
            common = [
                (b"x-fedge-version", runtime.version_label.encode("latin-1", "replace")),
                (b"x-fedge-precision", runtime.precision.encode()),
            ]
            both = self._headers[runtime] = (
                [_JSON, *common],
                [(b"content-type", NPY_CONTENT_TYPE.encode()), *common],
            )
        return both[1] if npy else both[0]

    def _batcher_now(self) -> MicroBatcher:
        current = self._batcher
        loop = asyncio.get_running_loop()
        if current is None or current.loop not in (None, loop):  # a new loop (tests): a new batcher
            current = self._batcher = MicroBatcher(
                max_batch=self.max_batch, max_wait_ms=self.max_wait_ms, on_batch=self.metrics.record_batch
            )
        return current

    async def run(self, runtime: ModelRuntime, x: np.ndarray) -> np.ndarray:
        """The model's outputs for ``x`` (the ``/v2`` routes call it as ``/v1/predict`` does)."""
        return await self._run(runtime, x)

    async def _run(self, runtime: ModelRuntime, x: np.ndarray) -> np.ndarray:
        """The model's outputs; a model failure is the server's fault: 500, logged, counted."""
        try:
            if self.batching:
                return await self._batcher_now().submit(runtime, x)
            rows = len(x)
            per_row = self._inline_costs.get(runtime)
            if per_row is not None and per_row * rows <= INLINE_BUDGET_S:
                out, seconds = _timed_predict(runtime, x)
            else:
                if self._thread is None:
                    self._thread = ThreadPoolExecutor(1, thread_name_prefix="fedge-model")
                loop = asyncio.get_running_loop()
                out, seconds = await loop.run_in_executor(self._thread, _timed_predict, runtime, x)
            cost = seconds / rows  # the model's own time, not the hop's nor a queue's
            self._inline_costs[runtime] = min(cost, self._inline_costs.get(runtime, cost))
            self.metrics.record_batch(rows)
            return out
        except Exception as exc:
            log.exception("prediction failed on %s", runtime.version_label)
            self.metrics.record_error("predict")
            raise PredictionFailedError(f"the model failed on these rows: {exc}") from exc


def parse_json(body: bytes, runtime: ModelRuntime) -> np.ndarray:
    """``{"rows": ...}`` validated against ``runtime``'s manifest."""
    try:
        doc = loads(body)
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


def parse_npy(body: bytes, runtime: ModelRuntime) -> np.ndarray:
    """A float32 ``.npy`` array validated against ``runtime``'s manifest."""
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


def npy_bytes(out: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(out, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def error_body(error: FedgeError) -> bytes:
    """The one rendering of a refusal: ``{"error": {"code", "message"}}``."""
    return dumps({"error": {"code": error.code, "message": error.message}})


def _timed_predict(runtime: ModelRuntime, x: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    out = runtime.predict(x)
    return out, time.perf_counter() - started
