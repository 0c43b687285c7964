"""PromptGrid keeps Flower's ``send_and_receive`` contract while polling promptly.

The grid below is the simulation's own in-memory grid contract reduced to push and pull: replies
become available after a number of polls; the deadline decides what is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from coordinator.prompt_grid import PromptGrid


@dataclass
class ScriptedGrid:
    """Replies to message ``i`` become available ``ready_after[i]`` seconds after the push."""

    ready_after: dict[str, float]
    pushed_at: float = 0.0
    pulls: list[float] = field(default_factory=list)
    delivered: set[str] = field(default_factory=set)

    def push_messages(self, messages: list[str]) -> list[str]:
        self.pushed_at = time.monotonic()
        return list(messages)

    def pull_messages(self, ids: set[str]) -> list[Any]:
        now = time.monotonic()
        self.pulls.append(now - self.pushed_at)
        ready = [i for i in ids if i not in self.delivered and now - self.pushed_at >= self.ready_after[i]]
        self.delivered.update(ready)
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]

    def get_node_ids(self) -> list[int]:
        return [1, 2]


def replied(replies: list[Any]) -> set[str]:
    return {r.metadata.reply_to_message_id for r in replies}


def test_every_reply_is_returned_and_the_wait_ends_with_the_last_one() -> None:
    grid = ScriptedGrid({"a": 0.0, "b": 0.3})

    replies = PromptGrid(grid).send_and_receive(["a", "b"], timeout=30)

    assert replied(replies) == {"a", "b"}
    # The pull that found "b" is the first one after it was ready: the wait ended with it.
    assert grid.pulls[-2] < 0.3 <= grid.pulls[-1]


def test_the_deadline_returns_what_arrived_and_leaves_the_late_reply_behind() -> None:
    grid = ScriptedGrid({"a": 0.0, "late": 60.0})

    replies = PromptGrid(grid).send_and_receive(["a", "late"], timeout=0.4)

    assert replied(replies) == {"a"}
    assert "late" not in grid.delivered
    assert grid.pulls[-1] < 30.0  # the deadline (0.4 s) ended the wait, not the late reply


def test_polls_back_off_to_the_cap_during_a_long_wait() -> None:
    grid = ScriptedGrid({"slow": 1.5})

    PromptGrid(grid).send_and_receive(["slow"], timeout=10)

    # Intervals grow from 0.05 s to MAX_POLL_S: a 1.5 s wait takes a handful of polls, not hundreds.
    assert 2 <= len(grid.pulls) <= 1.5 / 0.05


def test_other_attributes_are_the_grid_s_own() -> None:
    grid = ScriptedGrid({})
    assert PromptGrid(grid).get_node_ids() == [1, 2]
    with pytest.raises(AttributeError):
        _ = PromptGrid(grid).no_such_attribute
