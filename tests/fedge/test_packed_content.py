"""Packed content: a whole RecordDict in one Flower object, given back equal; bad packing refused."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedge.errors import FederationError
from fedge.packed_content import (
    PACK_LIMIT_BYTES,
    PACKED_FORMAT,
    PACKED_KEY,
    is_packed,
    pack_content,
    unpack_content,
)


def model_content() -> RecordDict:
    rng = np.random.default_rng(0)
    arrays = ArrayRecord(
        {f"layer{i}.weight": Array(rng.normal(size=(64, 64)).astype(np.float32)) for i in range(3)}
    )
    return RecordDict(
        {
            "arrays": arrays,
            "config": ConfigRecord({"lr": 0.1, "local-epochs": 2, "name": "site-a", "blob": b"\x00\x01"}),
            "metrics": MetricRecord({"num-examples": 480, "train-loss": 0.25}),
        }
    )


def test_packed_content_is_one_record_and_unpacks_to_equal_content() -> None:
    content = model_content()

    packed = pack_content(content)

    assert packed is not None and is_packed(packed) and not is_packed(content)
    assert list(packed.keys()) == [PACKED_KEY]
    # The point of packing: a few Flower objects instead of one per record, array and chunk.
    assert len(get_all_nested_objects(packed)) == 2 < len(get_all_nested_objects(content))
    unpacked = unpack_content(packed)
    assert unpacked.object_id == content.object_id
    assert list(unpacked.keys()) == ["arrays", "config", "metrics"]
    np.testing.assert_array_equal(
        unpacked["arrays"]["layer1.weight"].numpy(), content["arrays"]["layer1.weight"].numpy()
    )
    assert unpacked["config"]["blob"] == b"\x00\x01"


def test_content_over_the_limit_or_already_packed_is_left_as_it_is() -> None:
    big = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(PACK_LIMIT_BYTES // 4 + 1, np.float32))})})
    assert pack_content(big) is None
    packed = pack_content(model_content())
    assert pack_content(packed) is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            lambda p: RecordDict({PACKED_KEY: p[PACKED_KEY], "extra": ConfigRecord({"a": 1})}),
            "single ConfigRecord",
        ),
        (lambda p: RecordDict({PACKED_KEY: MetricRecord({"a": 1.0})}), "single ConfigRecord"),
        (
            lambda p: RecordDict({PACKED_KEY: ConfigRecord({"format": "zip-9", "content": b"x"})}),
            "format 'zip-9'",
        ),
        (
            lambda p: RecordDict({PACKED_KEY: ConfigRecord({"format": PACKED_FORMAT, "content": "text"})}),
            "no bytes",
        ),
        (
            lambda p: RecordDict(
                {PACKED_KEY: ConfigRecord({"format": PACKED_FORMAT, "content": b"\xff\xff"})}
            ),
            "does not decode",
        ),
        (
            lambda p: RecordDict({PACKED_KEY: ConfigRecord({"format": PACKED_FORMAT, "content": _twice(p)})}),
            "packed twice",
        ),
    ],
)
def test_malformed_packed_content_is_refused_naming_what_is_wrong(content, says) -> None:  # type: ignore[no-untyped-def]
    packed = pack_content(model_content())

    with pytest.raises(FederationError, match=says):
        unpack_content(content(packed))


def _twice(packed: RecordDict) -> bytes:
    """Already packed content, serialized as if it were the content to pack."""
    from flwr.common.serde import recorddict_to_proto

    return bytes(recorddict_to_proto(packed).SerializeToString())
