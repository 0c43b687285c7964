"""What ``fedge edge run`` serves from its first instant: predictions first, the rest of the app soon.

Importing FastAPI (and pydantic's models of OpenAPI) costs about as much as everything else a
device needs to answer a prediction. :func:`fast_start_app` answers ``POST /v1/predict`` through a
:class:`~edge.predictor.Predictor` at once, and builds the full serving app
(:func:`edge.server.create_serving_app`, over the same predictor) in a thread when the server
starts; the other routes (``/healthz``, ``/metrics``, ``/v1/model``...) wait for it, briefly, if a
request comes first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from edge.metrics import ServingMetrics
from edge.predict_asgi import PredictEndpoint
from edge.predictor import NPY_CONTENT_TYPE, Predictor
from edge.slot import ModelSlot

__all__ = ["DeferredApp", "fast_start_app"]

log = logging.getLogger(__name__)
AsgiApp = Callable[..., Any]


class DeferredApp:
    """An ASGI app built in a thread at lifespan startup; requests before it is ready wait for it.

    The lifespan is answered here (the built app's own lifespan never runs): ``on_shutdown`` runs
    at shutdown. With ``quiet_s``, the build waits that long after startup unless a request needs
    the app sooner: its imports (~0.3 s of CPU, holding the GIL) then do not slow the first
    predictions, which do not need it.
    """

    def __init__(
        self, build: Callable[[], AsgiApp], on_shutdown: Callable[[], Any], *, quiet_s: float = 0.0
    ) -> None:
        self._build = build
        self._on_shutdown = on_shutdown
        self._quiet_s = quiet_s
        self._wanted = threading.Event()
        self._app: AsgiApp | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Build the app in a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_build, name="fedge-app-build", daemon=True)
            self._thread.start()

    def _run_build(self) -> None:
        if self._quiet_s > 0:
            self._wanted.wait(self._quiet_s)
        try:
            self._app = self._build()
        except BaseException as exc:  # surfaced to the requests that need the app
            log.exception("the serving app could not be built")
            self._error = exc
        finally:
            self._done.set()

    async def app(self) -> AsgiApp:
        """The built app (waits for the build without blocking the event loop)."""
        self._wanted.set()
        self.start()
        if not self._done.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self._done.wait)
        if self._app is None:
            raise RuntimeError("the serving app could not be built") from self._error
        return self._app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        app = await self.app()
        await app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                result = self._on_shutdown()
                if asyncio.iscoroutine(result):
                    await result
                await send({"type": "lifespan.shutdown.complete"})
                return


def fast_start_app(
    slot: ModelSlot,
    *,
    batching: bool,
    metrics: ServingMetrics,
    status_provider: Callable[[], Mapping[str, Any]] | None = None,
    max_body_bytes: int = 10 * 2**20,
    quiet_s: float = 0.0,
    metrics_token: str | None = None,
) -> PredictEndpoint:
    """The serving app of ``slot`` as ``fedge edge run`` serves it: predictions answered before the
    rest of the app (:func:`edge.server.create_serving_app`) has been imported and built (after
    ``quiet_s`` seconds, or at once when a request needs it: see :class:`DeferredApp`)."""
    slot.attach_metrics(metrics)
    predictor = Predictor(slot, metrics, batching=batching)

    def build() -> AsgiApp:
        from edge.server import create_serving_app

        return create_serving_app(
            slot,
            batching=batching,
            max_body_bytes=max_body_bytes,
            status_provider=status_provider,
            metrics=metrics,
            predictor=predictor,
            metrics_token=metrics_token,
        )

    return PredictEndpoint(
        DeferredApp(build, predictor.aclose, quiet_s=quiet_s),
        predict=predictor.answer,
        max_body_bytes=max_body_bytes,
        npy_content_type=NPY_CONTENT_TYPE.encode(),
    )
