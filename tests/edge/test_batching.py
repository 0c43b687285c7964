"""The micro-batcher's choice between running on the event loop and in its thread."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from edge.batching import MicroBatcher


class _Model:
    """A stand-in runtime that records which thread ran it and can be made slow."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.threads: list[str] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        if self.seconds:
            time.sleep(self.seconds)
        return x * 2


async def _calls(batcher: MicroBatcher, model: _Model, n: int) -> list[np.ndarray]:
    outs = []
    for i in range(n):
        outs.append(await batcher.submit(model, np.full((1, 3), i, dtype=np.float32)))  # type: ignore[arg-type]
    await batcher.aclose()
    return outs


def test_a_cheap_model_moves_onto_the_loop_and_a_slow_one_stays_in_the_thread() -> None:
    cheap, slow = _Model(0.0), _Model(0.002)

    cheap_outs = asyncio.run(_calls(MicroBatcher(inline_budget_ms=0.2), cheap, 5))
    asyncio.run(_calls(MicroBatcher(inline_budget_ms=0.2), slow, 5))

    assert cheap.threads[0].startswith("fedge-batch")
    assert cheap.threads[-1] == "MainThread"
    assert all(t.startswith("fedge-batch") for t in slow.threads)
    assert [float(o[0, 0]) for o in cheap_outs] == [0.0, 2.0, 4.0, 6.0, 8.0]
