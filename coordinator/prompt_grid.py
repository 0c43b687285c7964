"""A Flower ``Grid`` whose reply wait polls at sub-second intervals.

Flower 1.42's deployment grid pulls the replies of ``send_and_receive`` every 3 s, and once a reply
is listed it fetches the reply's objects (one HTTPS request per array and record) two at a time,
retrying an object the client is still uploading after 1 s, then 2, 4...: a round of two message
phases whose clients answer in 0.1 s cost 6-8 s in these waits alone. :class:`PromptGrid` pushes the
same messages with the grid's own ``push_messages`` and polls for replies first every
:data:`FIRST_POLL_S`, then at intervals growing to :data:`MAX_POLL_S` (a long training round costs a
poll every half second, not a busy loop). On Flower's HTTP grid it fetches a listed reply's objects
itself, :data:`OBJECT_CONCURRENCY` at a time, asking again for one still uploading after 0.05 s
(growing to 0.5 s); a reply whose objects never arrive is left to Flower's own pull, which turns it
into an error reply. The deadline (``timeout``) and what is returned are the grid's contract: every
reply received by then, late replies left behind.

On Flower's HTTP grid the messages' content is packed into one object (:mod:`fedge.packed_content`:
3 objects a message instead of 17 for a six-tensor model), the ClientApp's first mod unpacks it and
packs its reply, and the replies are unpacked here: callers send and receive plain content. A reply
whose packed content does not decode becomes an error reply from its node.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Error, Message
from flwr.app.message import make_message
from flwr.common.constant import ErrorCode
from flwr.proto.message_pb2 import (  # pylint: disable=no-name-in-module
    ConfirmMessageReceivedRequest,
    ObjectTree,
)
from flwr.proto.runtime_pb2 import PullAppMessagesRequest  # pylint: disable=no-name-in-module
from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
from flwr.supercore.inflatable.inflatable_protobuf_utils import make_pull_object_fn_protobuf
from flwr.supercore.inflatable.inflatable_utils import (
    ObjectPullError,
    inflate_object_from_contents,
    pull_objects,
)

from fedge.errors import FederationError
from fedge.packed_content import is_packed, pack_content, unpack_content

__all__ = [
    "FIRST_POLL_S",
    "MAX_POLL_S",
    "NODE_IDS_REUSE_S",
    "OBJECT_CONCURRENCY",
    "PromptGrid",
    "packed_message",
    "unpacked_reply",
]

FIRST_POLL_S = 0.05
MAX_POLL_S = 0.5
OBJECT_CONCURRENCY = 8
_GROWTH = 1.5
# Flower's strategies ask for the connected nodes twice when a phase starts (to size the sample,
# then to sample it); a second ask this soon after the first gets the same answer without a request.
NODE_IDS_REUSE_S = 0.25
# Longest wait for the objects of one listed reply (its client is uploading them) before Flower's
# own pull takes over.
_OBJECT_WAIT_S = 60.0


class PromptGrid:
    """Wrap ``grid``: ``send_and_receive`` polls promptly; every other attribute is the grid's own."""

    def __init__(
        self, grid: Any, *, first_poll_s: float = FIRST_POLL_S, max_poll_s: float = MAX_POLL_S
    ) -> None:
        self._grid = grid
        self._first = first_poll_s
        self._max = max_poll_s
        self._node_ids: tuple[float, list[int]] | None = None
        # message id -> the node it was sent to: the SuperLink's error replies name no node.
        self._destinations: dict[str, int] = {}

    def get_node_ids(self) -> list[int]:
        """The connected nodes (the grid's answer, reused for :data:`NODE_IDS_REUSE_S` seconds)."""
        now = time.monotonic()
        if self._node_ids is None or now - self._node_ids[0] >= NODE_IDS_REUSE_S:
            self._node_ids = (now, list(self._grid.get_node_ids()))
        return list(self._node_ids[1])

    def destination_of(self, message_id: str) -> int | None:
        """The node a message this grid pushed was sent to (``None`` for an unknown id): what a
        reply the SuperLink made for that message (a node gone offline) does not say itself."""
        return self._destinations.get(message_id)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        """Push ``messages``, then pull their replies until all arrived or ``timeout`` seconds passed."""
        if getattr(self._grid, "_runtime_client", None) is not None:
            messages = [packed_message(m) for m in messages]
        else:
            messages = list(messages)
        pushed = list(self._grid.push_messages(messages))
        for message, message_id in zip(messages, pushed, strict=False):
            if message_id:
                self._destinations[message_id] = int(message.metadata.dst_node_id)
        waiting = {i for i in pushed if i}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Any] = []
        interval = self._first
        while waiting:
            received = self._pull(waiting)
            replies.extend(received)
            waiting.difference_update(m.metadata.reply_to_message_id for m in received)
            if not waiting:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            # Replies come in bunches (the nodes got the message at the same time): after one
            # arrived, the next poll is prompt again.
            interval = self._first if received else interval
            time.sleep(interval if left is None else min(interval, left))
            interval = min(self._max, interval * _GROWTH)
        return replies

    def _pull(self, ids: set[str]) -> list[Any]:
        runtime = getattr(self._grid, "_runtime_client", None)
        if runtime is None:  # not Flower's HTTP grid (the simulation's in-memory grid): its own pull
            return list(self._grid.pull_messages(ids))
        response = runtime.PullMessages(PullAppMessagesRequest(message_ids=sorted(ids)))
        replies: list[Any] = []
        for proto, tree in zip(response.messages_list, response.message_object_trees, strict=True):
            message = self._fetch(runtime, proto.metadata.message_id, tree)
            if message is None:  # objects never arrived: Flower's pull makes the error reply
                message = next(iter(self._grid.pull_messages([proto.metadata.reply_to_message_id])), None)
            if message is not None:
                replies.append(unpacked_reply(message))
        return replies

    def _fetch(self, runtime: Any, message_id: str, tree: ObjectTree) -> Message | None:
        run_id = self._grid.run.run_id
        node = self._grid.node
        try:
            contents = pull_objects(
                [t.object_id for t in iterate_object_tree(tree)],
                make_pull_object_fn_protobuf(runtime.PullObject, node, run_id),
                max_concurrent_pulls=OBJECT_CONCURRENCY,
                max_time=_OBJECT_WAIT_S,
                initial_backoff=FIRST_POLL_S,
                backoff_cap=MAX_POLL_S,
            )
        except ObjectPullError:
            return None
        runtime.ConfirmMessageReceived(
            ConfirmMessageReceivedRequest(node=node, run_id=run_id, message_object_id=message_id)
        )
        message = inflate_object_from_contents(message_id, contents)
        if not isinstance(message, Message):
            return None
        message.metadata.__dict__["_message_id"] = message_id  # the deflated message lacks its own id
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def packed_message(message: Message) -> Message:
    """``message`` with its content packed into one object (as it is when too large to pack)."""
    if message.has_error():
        return message
    content = pack_content(message.content)
    if content is None:
        return message
    return make_message(metadata=copy.copy(message.metadata), content=content)


def unpacked_reply(reply: Message) -> Message:
    """``reply`` with its packed content unpacked; an error reply from its node if it does not decode."""
    if reply.has_error() or not is_packed(reply.content):
        return reply
    try:
        content = unpack_content(reply.content)
    except FederationError as exc:
        return make_message(
            metadata=copy.copy(reply.metadata),
            error=Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(exc)),
        )
    return make_message(metadata=copy.copy(reply.metadata), content=content)
