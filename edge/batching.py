"""Dynamic micro-batching: concurrent requests' rows run as one model call, then split back.

While the model is idle a request runs on the next event-loop turn (joined by whatever arrived
meanwhile); while it is busy, requests queue until it is free, ``max_batch`` rows are queued, or
``max_wait_ms`` passed, so that under load one onnxruntime call serves many requests. The model
runs in a thread executor, off the event loop, unless a batch is expected to take less than
``inline_budget_ms`` (measured per row as batches run): then the thread hop would cost more than
the model, and the batch runs on the loop. Rows for different runtimes (a swap or an A/B split
in the middle of a batch) run as separate calls, each on the runtime its request chose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from edge.runtime import ModelRuntime

__all__ = ["MicroBatcher"]

_Item = tuple[ModelRuntime, np.ndarray, "asyncio.Future[np.ndarray]"]


class MicroBatcher:
    """Collect rows from concurrent callers into batches for :meth:`ModelRuntime.predict`.

    Parameters
    ----------
    max_batch : int
        Run as soon as this many rows are queued.
    max_wait_ms : float
        Run at the latest this long after the first queued request.
    executor : Executor, optional
        Where the model runs; by default one thread owned (and shut down) by this batcher.
    on_batch : callable, optional
        Called with the row count of each model run (for metrics).
    """

    def __init__(
        self,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
        inline_budget_ms: float = 0.2,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch {max_batch} must be >= 1 and max_wait_ms {max_wait_ms} >= 0")
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="fedge-batch")
        self._on_batch = on_batch
        self.inline_budget = inline_budget_ms / 1000.0
        self._seconds_per_row: dict[int, float] = {}  # by runtime id: fastest observed cost per row
        self._pending: list[_Item] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, runtime: ModelRuntime, x: np.ndarray) -> np.ndarray:
        """Queue validated rows ``x`` for ``runtime``; return its outputs for exactly these rows."""
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((runtime, x, fut))
        self._rows += len(x)
        if self._rows >= self.max_batch:
            self._flush()
        elif self._timer is None:
            # Idle model: run on the next loop turn, so requests already read join this batch but
            # none waits for the timer. Busy model: wait up to max_wait (or until it is free).
            delay = 0.0 if self._inflight == 0 else self.max_wait
            self._timer = loop.call_later(delay, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        items, self._pending, self._rows = self._pending, [], 0
        task = asyncio.get_running_loop().create_task(self._run(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[_Item]) -> None:
        self._inflight += 1
        try:
            await self._run_groups(items)
        finally:
            self._inflight -= 1
        if self._pending and self._inflight == 0:
            self._flush()  # requests queued while the model was busy run now, not at their timer

    async def _run_groups(self, items: list[_Item]) -> None:
        groups: dict[int, list[_Item]] = {}
        for item in items:
            groups.setdefault(id(item[0]), []).append(item)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            runtime = group[0][0]
            xs = [x for _, x, _ in group]
            rows = sum(len(x) for x in xs)
            per_row = self._seconds_per_row.get(id(runtime))
            inline = per_row is not None and per_row * rows < self.inline_budget
            try:
                started = time.perf_counter()
                if inline:
                    out = _predict_concat(runtime, xs)
                else:
                    out = await loop.run_in_executor(self._executor, _predict_concat, runtime, xs)
                cost = (time.perf_counter() - started) / max(rows, 1)
                # The fastest run observed: executor timings include the thread hop (and a thread's
                # start) and only overestimate the model, so a model is judged cheap only when some
                # run, hop included, fit the budget.
                self._seconds_per_row[id(runtime)] = min(cost, self._seconds_per_row.get(id(runtime), cost))
            except Exception as exc:
                for _, _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(out))
            start = 0
            for _, x, fut in group:
                end = start + len(x)
                if not fut.done():  # the caller may have gone (client disconnect)
                    fut.set_result(out[start:end])
                start = end

    async def aclose(self) -> None:
        """Run what is queued, wait for running batches, and release the executor."""
        if self._pending:
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_executor:
            self._executor.shutdown(wait=False)


def _predict_concat(runtime: ModelRuntime, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    return runtime.predict(x)
