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

    def push_messages(self, messages: list[Any]) -> list[str]:
        self.pushed_at = time.monotonic()
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, ids: set[str]) -> list[Any]:
        now = time.monotonic()
        self.pulls.append(now - self.pushed_at)
        ready = [i for i in ids if i not in self.delivered and now - self.pushed_at >= self.ready_after[i]]
        self.delivered.update(ready)
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]

    node_asks: int = 0

    def get_node_ids(self) -> list[int]:
        self.node_asks += 1
        return [1, 2]


def outgoing(*message_ids: str) -> list[Any]:
    """Messages as the grid pushes them: an id (the grid's answer to the push), node 1, 2... each."""
    return [
        SimpleNamespace(metadata=SimpleNamespace(message_id=m, dst_node_id=n))
        for n, m in enumerate(message_ids, start=1)
    ]


def replied(replies: list[Any]) -> set[str]:
    return {r.metadata.reply_to_message_id for r in replies}


def test_every_reply_is_returned_and_the_wait_ends_with_the_last_one() -> None:
    grid = ScriptedGrid({"a": 0.0, "b": 0.3})

    replies = PromptGrid(grid).send_and_receive(outgoing("a", "b"), timeout=30)

    assert replied(replies) == {"a", "b"}
    # The pull that found "b" is the first one after it was ready: the wait ended with it.
    assert grid.pulls[-2] < 0.3 <= grid.pulls[-1]


def test_the_deadline_returns_what_arrived_and_leaves_the_late_reply_behind() -> None:
    grid = ScriptedGrid({"a": 0.0, "late": 60.0})

    replies = PromptGrid(grid).send_and_receive(outgoing("a", "late"), timeout=0.4)

    assert replied(replies) == {"a"}
    assert "late" not in grid.delivered
    assert grid.pulls[-1] < 30.0  # the deadline (0.4 s) ended the wait, not the late reply


def test_polls_back_off_to_the_cap_during_a_long_wait() -> None:
    grid = ScriptedGrid({"slow": 1.5})

    PromptGrid(grid).send_and_receive(outgoing("slow"), timeout=10)

    # Intervals grow from 0.05 s to MAX_POLL_S: a 1.5 s wait takes a handful of polls, not hundreds.
    assert 2 <= len(grid.pulls) <= 1.5 / 0.05


def test_after_a_reply_arrives_the_next_poll_is_prompt_again() -> None:
    grid = ScriptedGrid({"a": 0.3, "b": 0.5})

    PromptGrid(grid).send_and_receive(outgoing("a", "b"), timeout=10)

    found_a = next(i for i, t in enumerate(grid.pulls) if t >= 0.3)
    gaps = [later - earlier for earlier, later in zip(grid.pulls, grid.pulls[1:], strict=False)]
    # The poll that found "a" came after a grown interval; the one after it, after the first one again.
    assert gaps[found_a] < gaps[found_a - 1]


def test_the_connected_nodes_asked_twice_at_once_cost_one_request() -> None:
    from coordinator.prompt_grid import NODE_IDS_REUSE_S

    grid = ScriptedGrid({})
    prompt = PromptGrid(grid)

    assert prompt.get_node_ids() == [1, 2] and prompt.get_node_ids() == [1, 2]
    assert grid.node_asks == 1
    time.sleep(NODE_IDS_REUSE_S)
    assert prompt.get_node_ids() == [1, 2]
    assert grid.node_asks == 2  # a later ask is the grid's answer again (a node that left is gone)


def test_other_attributes_are_the_grid_s_own() -> None:
    grid = ScriptedGrid({})
    assert PromptGrid(grid).get_node_ids() == [1, 2]
    with pytest.raises(AttributeError):
        _ = PromptGrid(grid).no_such_attribute


def _message(content: Any, *, src: int, reply_to: str = "") -> Any:
    from flwr.app import Metadata
    from flwr.app.message import make_message

    metadata = Metadata(
        run_id=7, message_id="r-1", src_node_id=src, dst_node_id=1, reply_to_message_id=reply_to,
        group_id="2", created_at=time.time(), ttl=600.0, message_type="train",
    )  # fmt: skip
    return make_message(metadata=metadata, content=content)


def test_messages_travel_packed_and_replies_come_back_plain() -> None:
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    from coordinator.prompt_grid import packed_message, unpacked_reply
    from fedge.packed_content import is_packed, pack_content

    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.ones((4, 4), np.float32))}),
            "config": ConfigRecord({"lr": 0.1}),
        }
    )
    sent = packed_message(_message(content, src=1))
    assert is_packed(sent.content) and sent.metadata.group_id == "2" and sent.metadata.dst_node_id == 1

    reply = unpacked_reply(_message(pack_content(content), src=42, reply_to="m-1"))
    assert not reply.has_error() and reply.content.object_id == content.object_id
    assert reply.metadata.src_node_id == 42 and reply.metadata.reply_to_message_id == "m-1"


def test_a_reply_whose_packed_content_does_not_decode_is_an_error_reply_from_its_node() -> None:
    from flwr.app import ConfigRecord, RecordDict

    from coordinator.prompt_grid import unpacked_reply
    from coordinator.round_recorder import train_attendance
    from fedge.packed_content import PACKED_FORMAT, PACKED_KEY

    bad = RecordDict({PACKED_KEY: ConfigRecord({"format": PACKED_FORMAT, "content": b"\xff\xff"})})

    reply = unpacked_reply(_message(bad, src=42, reply_to="m-1"))

    assert reply.has_error() and "does not decode" in reply.error.reason
    # The round's attendance names the node and why it dropped.
    dropped = train_attendance([42], [reply])["dropped"]
    assert dropped == [{"node_id": 42, "name": "", "reason": "error", "detail": dropped[0]["detail"]}]
    assert "does not decode" in dropped[0]["detail"]


def test_the_grid_remembers_which_node_each_pushed_message_went_to() -> None:
    # The SuperLink's error reply for a node gone offline names only the message it answers.
    grid = ScriptedGrid({"m1": 0.0, "m2": 0.0})

    prompt = PromptGrid(grid)
    prompt.send_and_receive(outgoing("m1", "m2"), timeout=5)

    assert (prompt.destination_of("m1"), prompt.destination_of("m2")) == (1, 2)
    assert prompt.destination_of("never-sent") is None
