"""fedge.audit_witness: the last head kept, honest growth accepted, truncation, wipe and rewrite refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fedge.audit_witness import AuditInconsistentError, AuditWitness
from fedge.crypto import generate_private_key
from fedge.errors import ConfigError, DataError
from fedge.transparency import MemoryNodes, consistency_proof, leaf_hash, sign_tree_head, tree_root

KEY = generate_private_key()


def log_of(n: int, *, rewritten: int | None = None) -> MemoryNodes:
    tree = MemoryNodes()
    for i in range(n):
        tree.append(leaf_hash(f"{'forged' if i == rewritten else 'entry'} {i}".encode()))
    return tree


def head(tree: MemoryNodes, size: int | None = None):
    size = tree.size if size is None else size
    return sign_tree_head(KEY, size, tree_root(size, tree))


def prover(tree: MemoryNodes):
    def prove(m: int, n: int) -> list[bytes]:
        if n > tree.size:
            raise DataError(f"the audit log holds {tree.size} entries: no consistency proof up to {n}")
        return consistency_proof(m, n, tree)

    return prove


def test_growth_is_kept_and_an_older_consistent_head_is_accepted(tmp_path: Path) -> None:
    witness = AuditWitness(tmp_path / "h.json", KEY.public_key())
    tree = log_of(20)
    witness.observe(head(tree, 5), prover(tree))
    witness.observe(head(tree, 17), prover(tree))
    kept = witness.observe(head(tree, 9), prover(tree))  # an older release's head: a prefix, fine

    assert kept.tree_size == 17 == witness.last().tree_size  # type: ignore[union-attr]
    assert stat.S_IMODE((tmp_path / "h.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("registry_now", "words"),
    [
        (log_of(6), "cannot prove"),  # truncated below the kept 10
        (log_of(0), "cannot prove"),  # wiped
        (log_of(30, rewritten=3), "is not consistent"),  # an old entry rewritten, the tree rebuilt
    ],
)
def test_a_rewritten_registry_is_refused_and_the_kept_head_stays(
    tmp_path: Path, registry_now: MemoryNodes, words: str
) -> None:
    witness = AuditWitness(tmp_path / "h.json", KEY.public_key())
    honest = log_of(10)
    witness.observe(head(honest), prover(honest))
    new = head(registry_now, registry_now.size) if registry_now.size else head(log_of(12, rewritten=0))

    with pytest.raises(AuditInconsistentError, match=words) as caught:
        witness.observe(new, prover(registry_now))

    assert "the head of 10 entries seen" in caught.value.message
    assert witness.last().tree_size == 10  # type: ignore[union-attr]


def test_same_size_other_root_and_foreign_signatures_are_refused(tmp_path: Path) -> None:
    witness = AuditWitness(tmp_path / "h.json", KEY.public_key())
    witness.observe(head(log_of(4)), prover(log_of(4)))
    with pytest.raises(AuditInconsistentError, match="differs from the head of 4 entries"):
        witness.observe(head(log_of(4, rewritten=1)), prover(log_of(4)))
    foreign = sign_tree_head(generate_private_key(), 5, tree_root(5, log_of(5)))
    with pytest.raises(AuditInconsistentError, match="not signed by the pinned key"):
        witness.observe(foreign, prover(log_of(5)))


def test_a_corrupt_witness_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"tree_size": "x"}))
    with pytest.raises(ConfigError, match=r"h\.json.*tree_size"):
        AuditWitness(path).last()
