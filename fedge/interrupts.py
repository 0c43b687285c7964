"""Ctrl-C and SIGTERM that are never lost while fedge waits on the processes it started."""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["install_interrupt_handlers", "raise_if_interrupted"]

# Set by the first SIGINT or SIGTERM. A KeyboardInterrupt raised while the interpreter runs a
# finalizer (a __del__, a weakref callback) is printed and dropped; loops that wait on child
# processes check this flag too, so a Ctrl-C is never lost.
_INTERRUPTED = threading.Event()


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    _INTERRUPTED.set()
    raise KeyboardInterrupt(f"signal {signum}")


def install_interrupt_handlers() -> None:
    """Turn SIGINT and SIGTERM into a remembered KeyboardInterrupt (main thread only)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a SIGINT or SIGTERM arrived, even one that was swallowed."""
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt("interrupted")
