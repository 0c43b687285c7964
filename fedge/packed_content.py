"""A message's content packed into one Flower object, so a round pays a few object requests, not dozens.

Flower 1.42 stores and moves a message as a tree of objects (the message, its ``RecordDict``, each
record, each array and each array's chunk), one HTTPS request per object on both sides of the
SuperLink: a train message of a six-tensor model is 17 objects, pushed by the ServerApp, pulled by
the node, and again for the reply; on a busy SuperLink those requests were most of a round's time.
:func:`pack_content` serializes the whole ``RecordDict`` (Flower's own protobuf) into a single
``ConfigRecord`` under :data:`PACKED_KEY`; :func:`unpack_content` gives back an equal
``RecordDict``. Only content up to :data:`PACK_LIMIT_BYTES` is packed (a larger model travels as
Flower sends it, chunked). Nothing about who may send what changes: the packed bytes travel in
the same message, over the same TLS connection, signed by the same node key.

The ServerApp's grid (``coordinator/prompt_grid.py``) packs what it sends and unpacks the replies;
the ClientApp's first mod (``client/packing_mod.py``) unpacks a packed message and packs its reply.
"""

from __future__ import annotations

from typing import Any

from fedge.errors import FederationError

__all__ = ["PACKED_FORMAT", "PACKED_KEY", "PACK_LIMIT_BYTES", "is_packed", "pack_content", "unpack_content"]

PACKED_KEY = "fedge.packed-content"
PACKED_FORMAT = "fedge-recorddict-protobuf-1"
# Below Flower's array chunk size (5 MiB): a packed object is never larger than one Flower sends.
PACK_LIMIT_BYTES = 4 * 1024 * 1024
_FORMAT_KEY = "format"
_CONTENT_KEY = "content"


def is_packed(content: Any) -> bool:
    """Whether ``content`` (a ``RecordDict``) is a packed one."""
    try:
        return PACKED_KEY in content
    except TypeError:
        return False


def pack_content(content: Any) -> Any | None:
    """``content`` as a ``RecordDict`` holding one ``ConfigRecord``; ``None`` when it is larger
    than :data:`PACK_LIMIT_BYTES` serialized, or already packed (send it as it is)."""
    from flwr.app import ConfigRecord, RecordDict
    from flwr.common.serde import recorddict_to_proto

    if is_packed(content):
        return None
    payload = bytes(recorddict_to_proto(content).SerializeToString())
    if len(payload) > PACK_LIMIT_BYTES:
        return None
    return RecordDict({PACKED_KEY: ConfigRecord({_FORMAT_KEY: PACKED_FORMAT, _CONTENT_KEY: payload})})


def unpack_content(content: Any) -> Any:
    """The ``RecordDict`` that :func:`pack_content` packed.

    Raises
    ------
    FederationError
        The packed record is not one :func:`pack_content` makes (other records beside it, another
        format, or bytes that do not decode).
    """
    from flwr.app import ConfigRecord
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict  # pylint: disable=no-name-in-module

    record = content[PACKED_KEY]
    if len(content) != 1 or not isinstance(record, ConfigRecord):
        raise FederationError(f"packed message content must be a single ConfigRecord named {PACKED_KEY!r}")
    if record.get(_FORMAT_KEY) != PACKED_FORMAT:
        raise FederationError(
            f"packed message content has format {str(record.get(_FORMAT_KEY))[:40]!r}, "
            f"expected {PACKED_FORMAT!r}"
        )
    payload = record.get(_CONTENT_KEY)
    if not isinstance(payload, bytes):
        raise FederationError("packed message content carries no bytes")
    try:
        proto = ProtoRecordDict()
        proto.ParseFromString(payload)
        unpacked = recorddict_from_proto(proto)
    except Exception as exc:  # protobuf's DecodeError and whatever a malformed record raises
        raise FederationError(f"packed message content does not decode: {type(exc).__name__}") from None
    if is_packed(unpacked):
        raise FederationError("packed message content is packed twice")
    return unpacked
