"""A Flower ``Grid`` whose reply wait polls at sub-second intervals.

Flower 1.42's deployment grid pulls the replies of ``send_and_receive`` every 3 s: a round of two
message phases whose clients answer in 0.1 s still costs about 6 s in that wait alone.
:class:`PromptGrid` pushes the same messages with the grid's own ``push_messages`` and pulls with its
own ``pull_messages``, first every :data:`FIRST_POLL_S` and then at intervals growing to
:data:`MAX_POLL_S` (a long training round costs a pull every half second, not a busy loop). The
deadline (``timeout``) and what is returned are the grid's contract: every reply received by then,
late replies left behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

__all__ = ["FIRST_POLL_S", "MAX_POLL_S", "PromptGrid"]

FIRST_POLL_S = 0.05
MAX_POLL_S = 0.5
_GROWTH = 1.5


class PromptGrid:
    """Wrap ``grid``: ``send_and_receive`` polls promptly; every other attribute is the grid's own."""

    def __init__(
        self, grid: Any, *, first_poll_s: float = FIRST_POLL_S, max_poll_s: float = MAX_POLL_S
    ) -> None:
        self._grid = grid
        self._first = first_poll_s
        self._max = max_poll_s

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        """Push ``messages``, then pull their replies until all arrived or ``timeout`` seconds passed."""
        waiting = {i for i in self._grid.push_messages(messages) if i}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Any] = []
        interval = self._first
        while waiting:
            received = list(self._grid.pull_messages(waiting))
            replies.extend(received)
            waiting.difference_update(m.metadata.reply_to_message_id for m in received)
            if not waiting:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            time.sleep(interval if left is None else min(interval, left))
            interval = min(self._max, interval * _GROWTH)
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
