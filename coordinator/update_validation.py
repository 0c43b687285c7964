"""Checks every train reply before aggregation; a reply that fails one is dropped from the round.

In order, per reply: the record layout (only the records a fedge client sends, exactly one
ArrayRecord), the array keys against the global model's, each array's declared and decoded dtype
and shape (a payload whose bytes disagree with its header is malformed or oversized), NaN/Inf,
the ``num-examples`` metric (present, finite, > 0), the L2 norm of the update (reply minus
global) against ``strategy.validation.max_update_norm`` and ``norm_multiple`` x the median norm
of the round's replies that passed the other checks, and the ``num-examples`` claimed (a reply's
weight in the aggregate) against ``max_num_examples`` and ``num_examples_multiple`` x the median
claim of those replies. See docs/robustness.md.

The arithmetic is one pass over each reply's bytes: the ``.npy`` payload is read in place (no
copy), subtracted from the global values and dotted with itself (``benchmarks/byzantine.py``).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message

from fedge.config import UpdateValidationConfig
from fedge.protocol import ARRAYS_KEY, CLIENT_INFO_KEY, INFO_NAME, METRICS_KEY, NUM_EXAMPLES

__all__ = [
    "ALLOWED_RECORDS",
    "GlobalModel",
    "Rejection",
    "ValidationResult",
    "validate_replies",
]

log = logging.getLogger(__name__)

# The records a fedge train reply may carry; anything else is refused as an unknown record.
ALLOWED_RECORDS = frozenset({ARRAYS_KEY, METRICS_KEY, CLIENT_INFO_KEY})
# Bytes an array's payload may carry beyond its values: the .npy header (a few hundred bytes at most).
_HEADER_SLACK = 1024


@dataclass(frozen=True)
class Rejection:
    """One dropped reply: which node, which check, the value found and the bound it broke."""

    node_id: int
    check: str
    value: Any
    bound: Any
    # what the client called itself in its reply (informational: a sender may lie); "" if absent
    node_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the round's lineage (``rejected_updates``)."""
        return {
            "node_id": self.node_id, "node_name": self.node_name, "check": self.check,
            "value": self.value, "bound": self.bound,
        }  # fmt: skip


def _node_name(msg: Message) -> str:
    info = msg.content.get(CLIENT_INFO_KEY) if CLIENT_INFO_KEY in msg.content else None
    try:
        return str(info.get(INFO_NAME, ""))[:128] if isinstance(info, Mapping) else ""
    except Exception:
        return ""


@dataclass(frozen=True)
class ValidationResult:
    """The replies to aggregate (in their original order) and the ones dropped."""

    accepted: list[Message]
    rejected: list[Rejection]
    norms: dict[int, float]


class GlobalModel:
    """The arrays a round's replies are checked against, decoded once per round."""

    def __init__(self, arrays: ArrayRecord) -> None:
        self.specs: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.flat: dict[str, np.ndarray] = {}
        for key, array in arrays.items():
            value = _decode(array.data, tuple(array.shape))
            self.specs[key] = (str(value.dtype), tuple(int(d) for d in array.shape))
            self.flat[key] = value


def _decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The values of a ``.npy`` payload, flat and without a copy (C order).

    Raises
    ------
    ValueError
        For a payload that is not a plain ``.npy`` array or whose byte count disagrees with its header.
    """
    fp = io.BytesIO(data[:_HEADER_SLACK])
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        header_shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        header_shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"npy format version {version}")
    if dtype.hasobject:
        raise ValueError("object arrays are not model weights")
    count = math.prod(header_shape)
    offset = fp.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise _Rejected(
            "payload-size" if len(data) - offset > count * dtype.itemsize else "malformed-array",
            f"{len(data) - offset} bytes",
            f"{count * dtype.itemsize} bytes",
        )
    if tuple(header_shape) != tuple(shape):
        raise ValueError(f"the payload holds shape {list(header_shape)}, its header says {list(shape)}")
    value = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    if fortran and len(header_shape) > 1:
        value = value.reshape(header_shape[::-1]).T.ravel()
    return value


class _Rejected(Exception):
    def __init__(self, check: str, value: Any, bound: Any) -> None:
        super().__init__(check)
        self.check, self.value, self.bound = check, value, bound


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _update_norm(msg: Message, model: GlobalModel) -> tuple[float, float]:
    """Check one reply's layout, arrays and sample count; return its update's L2 norm."""
    content = msg.content
    unknown = sorted(set(content.keys()) - ALLOWED_RECORDS)
    if unknown:
        raise _Rejected("unknown-records", _short(unknown), sorted(ALLOWED_RECORDS))
    record = content.get(ARRAYS_KEY)
    if not isinstance(record, ArrayRecord) or len(content.array_records) != 1:
        raise _Rejected("array-record", f"{len(content.array_records)} array records", f"one {ARRAYS_KEY!r}")
    keys = list(record.keys())
    if set(keys) != set(model.specs):
        extra = sorted(set(keys) - set(model.specs))
        missing = sorted(set(model.specs) - set(keys))
        raise _Rejected("array-keys", _short({"unknown": extra, "missing": missing}), len(model.specs))
    total = 0.0
    for key in keys:
        array = record[key]
        dtype, shape = model.specs[key]
        if str(array.dtype) != dtype or tuple(array.shape) != shape:
            raise _Rejected(
                "shape-dtype", f"{key}: {array.dtype}{list(array.shape)}", f"{dtype}{list(shape)}"
            )
        try:
            value = _decode(array.data, shape)
        except _Rejected as why:
            raise _Rejected(why.check, f"{key}: {why.value}", why.bound) from None
        except Exception as exc:
            raise _Rejected("malformed-array", f"{key}: {type(exc).__name__}", "a numpy array") from None
        if str(value.dtype) != dtype:
            raise _Rejected("malformed-array", f"{key}: {value.dtype}", dtype)
        diff = value - model.flat[key]
        sq = (
            float(np.dot(diff, diff))
            if diff.dtype.kind == "f"
            else float(np.sum(diff.astype(np.float64) ** 2))
        )
        if not math.isfinite(sq):
            bad = int(np.count_nonzero(~np.isfinite(value)))
            if bad:
                raise _Rejected("non-finite", f"{key}: {bad} NaN/Inf values", 0)
            sq = float(np.dot(diff.astype(np.float64), diff.astype(np.float64)))
            if not math.isfinite(sq):
                raise _Rejected("update-norm", "inf", "finite")
        total += sq
    metrics = content.get(METRICS_KEY)
    count = metrics.get(NUM_EXAMPLES) if isinstance(metrics, Mapping) else None
    if (
        not isinstance(count, int | float)
        or isinstance(count, bool)
        or not math.isfinite(float(count))
        or count <= 0
    ):
        raise _Rejected("num-examples", _short(count), "> 0")
    return math.sqrt(total), float(count)


def _bound(absolute: float | None, multiple: float | None, values: list[float]) -> float | None:
    """The tighter of an absolute bound and ``multiple`` x the median of ``values`` (None: none)."""
    if multiple is None or not values:
        return absolute
    relative = multiple * float(np.median(values))
    return relative if absolute is None else min(absolute, relative)


def validate_replies(
    replies: Iterable[Message], model: GlobalModel, config: UpdateValidationConfig
) -> ValidationResult:
    """Split a round's train replies into those to aggregate and those to drop.

    Replies carrying an error pass through untouched (the strategy counts them as failures).
    The median for ``norm_multiple`` is taken over the replies that passed every other check.
    """
    replies = list(replies)
    if not config.enabled:
        return ValidationResult(replies, [], {})
    rejected: list[Rejection] = []
    norms: dict[int, float] = {}
    passed: list[tuple[Message, float, float]] = []
    kept_errors: list[Message] = []
    for msg in replies:
        if msg.has_error():
            kept_errors.append(msg)
            continue
        node = int(msg.metadata.src_node_id)
        try:
            norm, count = _update_norm(msg, model)
        except _Rejected as why:
            rejected.append(Rejection(node, why.check, why.value, why.bound, _node_name(msg)))
            continue
        norms[node] = norm
        passed.append((msg, norm, count))
    bound = _bound(config.max_update_norm, config.norm_multiple, [n for _, n, _ in passed])
    examples_bound = _bound(config.max_num_examples, config.num_examples_multiple, [c for *_, c in passed])
    accepted_ids = set()
    for msg, norm, count in passed:
        node = int(msg.metadata.src_node_id)
        if bound is not None and norm > bound:
            rejected.append(Rejection(node, "update-norm", round(norm, 6), round(bound, 6), _node_name(msg)))
        elif examples_bound is not None and count > examples_bound:
            rejected.append(Rejection(node, "num-examples", count, round(examples_bound, 6), _node_name(msg)))
        else:
            accepted_ids.add(id(msg))
    accepted = [m for m in replies if id(m) in accepted_ids or m.has_error()]
    return ValidationResult(accepted, rejected, norms)
