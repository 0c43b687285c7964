"""The ClientApp's first mod: unpack a message the ServerApp packed, and pack the reply to it.

See :mod:`fedge.packed_content`. A message that is not packed passes through as it is and its
reply is not packed (a ServerApp that does not pack reads replies as Flower sends them); the
handlers and every later mod (differential privacy, SecAgg+) see the unpacked content.
"""

from __future__ import annotations

import copy
from typing import Any

from flwr.app import Context, Message
from flwr.app.message import make_message

from fedge.packed_content import is_packed, pack_content, unpack_content

__all__ = ["packing_mod"]


def _with_content(message: Message, content: Any) -> Message:
    return make_message(metadata=copy.copy(message.metadata), content=content)


def packing_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower mod: unpack ``msg`` if packed; pack the reply of a packed message.

    Raises
    ------
    FederationError
        The packed content does not decode (the ClientApp replies with that error).
    """
    if msg.has_error() or not is_packed(msg.content):
        return call_next(msg, context)
    reply = call_next(_with_content(msg, unpack_content(msg.content)), context)
    if reply.has_error():
        return reply
    packed = pack_content(reply.content)
    return reply if packed is None else _with_content(reply, packed)
