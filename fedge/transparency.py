"""A transparency log's Merkle tree (RFC 6962 / RFC 9162) and its Ed25519-signed tree heads.

Leaves hash as ``sha256(0x00 || data)``, interior nodes as ``sha256(0x01 || left || right)``; the
root of ``n`` leaves splits them at the largest power of two below ``n``. A tree is kept as the
hashes of its *complete* subtrees, keyed ``(level, index)`` (the subtree of the ``2**level`` leaves
starting at ``index * 2**level``): appending a leaf writes one node per trailing one-bit of its
index, and a root or proof reads O(log n) stored nodes, never the leaves.

The functions that read a tree take a :class:`NodeSource` and ask it for every node they need in
one call, so a database-backed source answers with one query. Verification (inclusion and
consistency proofs, head signatures) is pure.

A :class:`SignedTreeHead` is what a witness keeps: tree size, root, timestamp, signer key id and
an Ed25519 signature over :meth:`SignedTreeHead.signed_bytes`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from fedge.crypto import Ed25519PrivateKey, Ed25519PublicKey, key_id, sign, verify_signature
from fedge.errors import DataError

__all__ = [
    "EMPTY_ROOT",
    "HEAD_FORMAT",
    "MemoryNodes",
    "NodeKey",
    "NodeSource",
    "SignedTreeHead",
    "append_nodes",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "peak_keys",
    "root_from_leaves",
    "sign_tree_head",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

NodeKey = tuple[int, int]  # (level, index) of a complete subtree
EMPTY_ROOT = hashlib.sha256(b"").digest()
HEAD_FORMAT = "fedge-audit-tree-head/1"


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: ``sha256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``sha256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root of a tree given all its leaf hashes (the definition; O(n), for checks and tests)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_from_leaves(leaf_hashes[:k]), root_from_leaves(leaf_hashes[k:]))


class NodeSource(Protocol):
    """Where complete-subtree hashes are kept (a dict, a database table)."""

    def nodes(self, keys: Iterable[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The hashes of ``keys``; a missing key may be left out (the caller then fails)."""
        ...


class MemoryNodes:
    """A tree in a dict of complete-subtree hashes, appended leaf by leaf."""

    def __init__(self) -> None:
        self.store: dict[NodeKey, bytes] = {}
        self.size = 0

    def nodes(self, keys: Iterable[NodeKey]) -> Mapping[NodeKey, bytes]:
        return {k: self.store[k] for k in keys if k in self.store}

    def append(self, leaf: bytes) -> None:
        """Append a leaf hash (see :func:`leaf_hash`); the same nodes as :func:`append_nodes`."""
        store, index, level, digest = self.store, self.size, 0, leaf
        store[(0, index)] = digest
        while index & 1:
            digest = node_hash(store[(level, index - 1)], digest)
            index >>= 1
            level += 1
            store[(level, index)] = digest
        self.size += 1


def _range_keys(start: int, end: int) -> list[NodeKey]:
    """The complete subtrees that make up leaves ``[start, end)``, largest first."""
    keys: list[NodeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def _range_hash(start: int, end: int, known: Mapping[NodeKey, bytes]) -> bytes:
    """MTH of leaves ``[start, end)`` (a subtree of the RFC split) from its complete subtrees."""
    parts = [_lookup(known, key) for key in _range_keys(start, end)]
    digest = parts[-1]
    for part in reversed(parts[:-1]):
        digest = node_hash(part, digest)
    return digest


def _lookup(known: Mapping[NodeKey, bytes], key: NodeKey) -> bytes:
    try:
        return known[key]
    except KeyError:
        raise DataError(
            f"the Merkle tree lacks node (level {key[0]}, index {key[1]}): its stored nodes are incomplete"
        ) from None


def _hash_ranges(ranges: Sequence[tuple[int, int]], source: NodeSource) -> list[bytes]:
    keys = {k for a, b in ranges for k in _range_keys(a, b)}
    known = source.nodes(sorted(keys))
    return [_range_hash(a, b, known) for a, b in ranges]


def peak_keys(size: int) -> list[NodeKey]:
    """The complete subtrees (left to right) whose roots a tree of ``size`` leaves is built from."""
    return _range_keys(0, size)


def append_nodes(size: int, leaf: bytes, source: NodeSource) -> dict[NodeKey, bytes]:
    """The nodes to store when leaf hash ``leaf`` becomes leaf ``size`` (0-based) of the tree.

    Reads only the left siblings it completes (the low peaks of the tree of ``size`` leaves).
    """
    new: dict[NodeKey, bytes] = {(0, size): leaf}
    siblings = []
    index, level = size, 0
    while index & 1:
        siblings.append((level, index - 1))
        index >>= 1
        level += 1
    known = source.nodes(siblings) if siblings else {}
    digest, index = leaf, size
    for level, (sib_level, sib_index) in enumerate(siblings):
        digest = node_hash(_lookup(known, (sib_level, sib_index)), digest)
        index >>= 1
        new[(level + 1, index)] = digest
    return new


def tree_root(size: int, source: NodeSource) -> bytes:
    """The root of the first ``size`` leaves (O(log n) nodes read)."""
    if size == 0:
        return EMPTY_ROOT
    return _hash_ranges([(0, size)], source)[0]


def _path_ranges(index: int, start: int, end: int) -> list[tuple[int, int]]:
    """RFC 6962 PATH(index, D[start:end]) as the leaf ranges of its hashes, leaf to root."""
    ranges: list[tuple[int, int]] = []
    while end - start > 1:
        k = _split(end - start)
        if index < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, index = start + k, index - k
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, source: NodeSource) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 6962 §2.1.1)."""
    if not 0 <= index < size:
        raise DataError(f"leaf {index} is not in a tree of {size} leaves")
    return _hash_ranges(_path_ranges(index, 0, size), source)


def _subproof_ranges(m: int, start: int, end: int, complete: bool) -> list[tuple[int, int]]:
    """RFC 6962 SUBPROOF(m, D[start:end], complete) as leaf ranges."""
    tail: list[tuple[int, int]] = []
    while True:
        n = end - start
        if m == n:
            if not complete:
                tail.append((start, end))
            break
        k = _split(n)
        if m <= k:
            tail.append((start + k, end))
            end = start + k
        else:
            tail.append((start, start + k))
            start, m, complete = start + k, m - k, False
    tail.reverse()
    return tail


def consistency_proof(old_size: int, new_size: int, source: NodeSource) -> list[bytes]:
    """The proof that the first ``old_size`` leaves are a prefix of ``new_size`` (RFC 6962 §2.1.2)."""
    if not 0 <= old_size <= new_size:
        raise DataError(f"no consistency proof from {old_size} to {new_size} leaves: the old tree is larger")
    if old_size == 0 or old_size == new_size:
        return []
    return _hash_ranges(_subproof_ranges(old_size, 0, new_size, True), source)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` of the tree ``root`` (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows tree ``old_root`` is a prefix of tree ``new_root`` (RFC 9162 §2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is itself a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


@dataclass(frozen=True)
class SignedTreeHead:
    """A tree size and root signed by a log's key: what a witness remembers and compares.

    Attributes
    ----------
    tree_size : int
        How many leaves (audit entries) the tree holds.
    root_hash : str
        Hex of the tree's root.
    timestamp : str
        When it was signed (ISO 8601, UTC).
    key_id : str
        :func:`fedge.crypto.key_id` of the signing key.
    signature : str
        Hex of the Ed25519 signature of :meth:`signed_bytes`.
    """

    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (format tag, size, root, time, key)."""
        body = {
            "format": HEAD_FORMAT,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "timestamp": self.timestamp,
            "key_id": self.key_id,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def root(self) -> bytes:
        """The root as bytes."""
        return bytes.fromhex(self.root_hash)

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        """Whether ``public_key`` signed this head (its id and its signature); never raises."""
        if self.key_id != key_id(public_key):
            return False
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return False
        return verify_signature(public_key, self.signed_bytes(), signature)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the export format, the API's body, a manifest's ``audit_head``)."""
        return {
            "format": HEAD_FORMAT,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SignedTreeHead:
        """Read a head from plain data.

        Raises
        ------
        DataError
            If a field is missing or malformed (the message names it).
        """
        if not isinstance(data, Mapping):
            raise DataError("a signed tree head must be a JSON object")
        if data.get("format", HEAD_FORMAT) != HEAD_FORMAT:
            raise DataError(f"signed tree head format {data.get('format')!r} is not {HEAD_FORMAT!r}")
        size = data.get("tree_size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63:
            raise DataError("signed tree head field 'tree_size' must be a non-negative integer")
        fields = {}
        for name, length in (("root_hash", 64), ("key_id", 16), ("signature", 128)):
            value = data.get(name)
            if not isinstance(value, str) or len(value) != length or not _is_hex(value):
                raise DataError(f"signed tree head field {name!r} must be {length} hex characters")
            fields[name] = value.lower()
        timestamp = data.get("timestamp")
        if not isinstance(timestamp, str) or not 0 < len(timestamp) <= 40:
            raise DataError("signed tree head field 'timestamp' must be an ISO 8601 string")
        return cls(size, fields["root_hash"], timestamp, fields["key_id"], fields["signature"])


def _is_hex(value: str) -> bool:
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def sign_tree_head(
    private_key: Ed25519PrivateKey, tree_size: int, root: bytes, *, timestamp: datetime | None = None
) -> SignedTreeHead:
    """Sign the head of a tree of ``tree_size`` leaves with root ``root``."""
    when = (timestamp or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    unsigned = SignedTreeHead(tree_size, root.hex(), when, key_id(private_key.public_key()), "")
    signature = sign(private_key, unsigned.signed_bytes())
    return SignedTreeHead(tree_size, root.hex(), when, unsigned.key_id, signature.hex())
