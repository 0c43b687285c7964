"""The Merkle tree and signed heads of fedge.transparency against the RFC 6962 definitions, brute force."""

from __future__ import annotations

import hashlib

import pytest

from fedge.crypto import generate_private_key
from fedge.errors import DataError
from fedge.transparency import (
    EMPTY_ROOT,
    MemoryNodes,
    SignedTreeHead,
    append_nodes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaves,
    sign_tree_head,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

SIZES = range(1, 65)


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"entry {i}".encode()) for i in range(n)]


@pytest.fixture(scope="module")
def tree() -> MemoryNodes:
    t = MemoryNodes()
    for leaf in leaves(64):
        t.append(leaf)
    return t


def mth(d: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, written straight from the text."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH."""
    if len(d) <= 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    return [*path(m, d[:k]), mth(d[k:])] if m < k else [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert tree_root(0, MemoryNodes()) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", SIZES)
def test_roots_match_the_definition_for_every_prefix(tree: MemoryNodes, n: int) -> None:
    d = leaves(n)
    assert tree_root(n, tree) == mth(d) == root_from_leaves(d)


@pytest.mark.parametrize("n", SIZES)
def test_inclusion_proofs_match_path_and_verify(tree: MemoryNodes, n: int) -> None:
    d, root = leaves(n), mth(leaves(n))
    for m in range(n):
        proof = inclusion_proof(m, n, tree)
        assert proof == path(m, d)
        assert verify_inclusion(d[m], m, n, proof, root)
        assert not verify_inclusion(leaf_hash(b"forged"), m, n, proof, root)
        if proof:
            bad = [*proof[:-1], hashlib.sha256(proof[-1]).digest()]
            assert not verify_inclusion(d[m], m, n, bad, root)
        if n > 1:
            assert not verify_inclusion(d[m], (m + 1) % n, n, proof, root) or d[m] == d[(m + 1) % n]


@pytest.mark.parametrize("n", SIZES)
def test_consistency_proofs_match_subproof_and_verify(tree: MemoryNodes, n: int) -> None:
    d = leaves(n)
    new_root = mth(d)
    for m in range(0, n + 1):
        proof = consistency_proof(m, n, tree)
        expected = [] if m in (0, n) else subproof(m, d, True)
        assert proof == expected, (m, n)
        old_root = mth(d[:m])
        assert verify_consistency(m, n, old_root, new_root, proof), (m, n)
        if 0 < m < n:
            # A rewritten old entry, a different new tree, a tampered proof: each refused.
            rewritten = mth([leaf_hash(b"rewritten"), *d[1:m]])
            assert not verify_consistency(m, n, rewritten, new_root, proof)
            assert not verify_consistency(m, n, old_root, mth([*d[:-1], leaf_hash(b"other")]), proof)
            tampered = [*proof[:-1], hashlib.sha256(proof[-1]).digest()]
            assert not verify_consistency(m, n, old_root, new_root, tampered)
            assert not verify_consistency(m, n, old_root, new_root, [])


def test_a_shrunk_tree_is_never_consistent(tree: MemoryNodes) -> None:
    assert not verify_consistency(10, 4, mth(leaves(10)), mth(leaves(4)), [])
    assert not verify_consistency(10, 0, mth(leaves(10)), EMPTY_ROOT, [])  # wiped
    with pytest.raises(DataError, match="old tree is larger"):
        consistency_proof(10, 4, tree)


def test_missing_nodes_are_an_error_not_a_wrong_root() -> None:
    t = MemoryNodes()
    for leaf in leaves(5):
        t.append(leaf)
    del t.store[(2, 0)]
    with pytest.raises(DataError, match="level 2, index 0"):
        tree_root(5, t)


def test_signed_heads_verify_and_detect_any_change() -> None:
    key, other = generate_private_key(), generate_private_key()
    head = sign_tree_head(key, 7, mth(leaves(7)))
    assert head.verify(key.public_key())
    assert not head.verify(other.public_key())
    again = SignedTreeHead.from_dict(head.to_dict())
    assert again == head and again.verify(key.public_key())
    for change in (
        {"tree_size": 8},
        {"root_hash": mth(leaves(6)).hex()},
        {"timestamp": "2020-01-01T00:00:00"},
    ):
        forged = SignedTreeHead.from_dict({**head.to_dict(), **change})
        assert not forged.verify(key.public_key()), change


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tree_size": -1}, "tree_size"),
        ({"tree_size": "3"}, "tree_size"),
        ({"root_hash": "zz"}, "root_hash"),
        ({"signature": "00"}, "signature"),
        ({"key_id": None}, "key_id"),
    ],
)
def test_malformed_heads_are_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    head = sign_tree_head(generate_private_key(), 1, leaf_hash(b"a")).to_dict()
    with pytest.raises(DataError, match=field):
        SignedTreeHead.from_dict({**head, **change})


def test_append_nodes_reads_only_siblings_and_builds_the_same_tree(tree: MemoryNodes) -> None:
    class Recording(MemoryNodes):
        asked: list[tuple[int, int]] = []

        def nodes(self, keys):
            keys = list(keys)
            self.asked.extend(keys)
            return super().nodes(keys)

    rebuilt = Recording()
    for i, leaf in enumerate(leaves(64)):
        rebuilt.store.update(append_nodes(i, leaf, rebuilt))
    assert rebuilt.store == tree.store
    assert len(rebuilt.asked) == 63  # one read per node completed, never a leaf rehashed
