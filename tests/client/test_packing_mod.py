"""The ClientApp's packing mod: packed messages reach the handlers unpacked and are answered packed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.app.message import make_message

from client.packing_mod import packing_mod
from fedge.errors import FederationError
from fedge.packed_content import PACKED_FORMAT, PACKED_KEY, is_packed, pack_content, unpack_content


def incoming(content: RecordDict) -> Message:
    metadata = Metadata(
        run_id=7, message_id="m-1", src_node_id=1, dst_node_id=42, reply_to_message_id="",
        group_id="3", created_at=time.time(), ttl=600.0, message_type="train",
    )  # fmt: skip
    return make_message(metadata=metadata, content=content)


def context() -> Context:
    return Context(run_id=7, node_id=42, node_config={}, state=RecordDict(), run_config={})


def global_model() -> RecordDict:
    arrays = ArrayRecord({"w": Array(np.arange(12, dtype=np.float32).reshape(3, 4))})
    return RecordDict({"arrays": arrays, "config": ConfigRecord({"lr": 0.1})})


def train(msg: Message, ctx: Context) -> Message:
    """A handler that needs the plain content: it doubles the weights."""
    w = msg.content["arrays"]["w"].numpy()
    return Message(RecordDict({"arrays": ArrayRecord({"w": Array(w * 2)})}), reply_to=msg)


def test_a_packed_message_is_handled_unpacked_and_answered_packed() -> None:
    msg = incoming(pack_content(global_model()))

    reply = packing_mod(msg, context(), train)

    assert is_packed(reply.content)
    assert reply.metadata.reply_to_message_id == "m-1" and reply.metadata.dst_node_id == 1
    np.testing.assert_array_equal(
        unpack_content(reply.content)["arrays"]["w"].numpy(),
        np.arange(12, dtype=np.float32).reshape(3, 4) * 2,
    )


def test_a_plain_message_and_its_reply_stay_plain() -> None:
    reply = packing_mod(incoming(global_model()), context(), train)

    assert not is_packed(reply.content)
    assert reply.content["arrays"]["w"].numpy()[0, 1] == 2.0


def test_an_error_reply_to_a_packed_message_stays_an_error() -> None:
    def fails(msg: Message, ctx: Context) -> Message:
        return Message(error=_error("no data"), reply_to=msg)

    reply = packing_mod(incoming(pack_content(global_model())), context(), fails)

    assert reply.has_error() and reply.error.reason == "no data"


def test_a_malformed_packed_message_is_refused_before_the_handler_runs() -> None:
    called = []
    bad = RecordDict({PACKED_KEY: ConfigRecord({"format": PACKED_FORMAT, "content": b"\xff\xff"})})

    with pytest.raises(FederationError, match="does not decode"):
        packing_mod(incoming(bad), context(), lambda m, c: called.append(m))

    assert called == []


def _error(reason: str):  # type: ignore[no-untyped-def]
    from flwr.app import Error

    return Error(code=0, reason=reason)
