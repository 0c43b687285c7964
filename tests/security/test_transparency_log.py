"""The audit log against whoever can write the registry database, seen from a witness's signed head.

A real SQLite registry is tampered with the way its database's writer could: entries deleted at
the end with the chain head moved back (and an older signed head replayed), the log wiped, a row
rewritten with every chain hash, tree node and the signed head recomputed by the registry itself.
The database alone cannot show the first two (``fedge audit verify`` says intact); the head a
witness exported earlier (``fedge audit head --out``) shows each, through the real ``fedge audit
verify --trusted-head``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from fedge.transparency import MemoryNodes, leaf_hash
from registry import RegistryConfig, open_registry
from registry.audit import GENESIS_HASH, entry_hash, leaf_data
from tests.cli.test_cli_errors import run_fedge

ENTRIES = 8
WITNESSED = 6  # entries when the witness exported its head


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A registry of 8 entries, the head a witness exported at 6, and the stored head row at 3."""
    root = tmp_path_factory.mktemp("seed") / "reg"
    registry = open_registry(RegistryConfig(root=str(root)))
    saved_head: dict[str, object] = {}
    for i in range(ENTRIES):
        if i == WITNESSED:
            result = run_fedge(
                "audit",
                "head",
                "--root",
                str(root),
                "--out",
                str(root.parent / "witness.json"),
                cwd=root.parent,
            )
            assert result.returncode == 0, result.stderr
        registry.store.append_audit(
            action="alias.moved", actor="alice", subject=f"digits@{i}", details={"i": i}
        )
        if i == 2:  # what a careful attacker keeps to replay later: the signed head of 3 entries
            with sqlite3.connect(root / "registry.db") as conn:
                conn.row_factory = sqlite3.Row
                saved_head = dict(conn.execute("SELECT * FROM audit_tree_head").fetchone())
    registry.close()
    return root, saved_head


@pytest.fixture
def registry_copy(
    seeded: tuple[Path, dict[str, object]], tmp_path: Path
) -> tuple[Path, Path, dict[str, object]]:
    root, saved_head = seeded
    copy = tmp_path / "reg"
    shutil.copytree(root, copy)
    witness = tmp_path / "witness.json"
    shutil.copy(root.parent / "witness.json", witness)
    return copy, witness, saved_head


def verify(root: Path, *extra: str) -> tuple[int, str]:
    result = run_fedge("audit", "verify", "--root", str(root), *extra, cwd=root.parent)
    return result.returncode, result.stdout + result.stderr


def test_an_untouched_log_extends_the_witnessed_head(
    registry_copy: tuple[Path, Path, dict[str, object]],
) -> None:
    root, witness, _ = registry_copy
    head = json.loads(witness.read_text())
    assert head["tree_size"] == WITNESSED and len(head["signature"]) == 128

    code, out = verify(root, "--trusted-head", str(witness))

    assert code == 0, out
    assert f"audit log intact: {ENTRIES} entries" in out and f"extends the trusted head of {WITNESSED}" in out


def test_truncation_with_the_head_moved_back_is_seen_from_the_witnessed_head(
    registry_copy: tuple[Path, Path, dict[str, object]],
) -> None:
    root, witness, saved_head = registry_copy
    with sqlite3.connect(root / "registry.db") as conn:
        last_hash = conn.execute("SELECT hash FROM audit_log WHERE seq = 3").fetchone()[0]
        conn.execute("DELETE FROM audit_log WHERE seq > 3")
        conn.execute("UPDATE audit_head SET seq = 3, hash = ?", (last_hash,))
        conn.execute(
            "UPDATE audit_tree_head SET tree_size = :tree_size, root_hash = :root_hash, "
            "timestamp = :timestamp, "
            "key_id = :key_id, signature = :signature",
            saved_head,
        )

    alone = verify(root)
    code, out = verify(root, "--trusted-head", str(witness))

    assert alone[0] == 0 and "intact: 3 entries" in alone[1]  # the database alone cannot show it
    assert code == 1
    assert f"truncated: it holds 3 entries but the trusted head ({WITNESSED} entries" in out
    assert f"entries 4..{WITNESSED} were deleted" in out


def test_a_wipe_is_seen_from_the_witnessed_head(registry_copy: tuple[Path, Path, dict[str, object]]) -> None:
    root, witness, _ = registry_copy
    with sqlite3.connect(root / "registry.db") as conn:
        conn.execute("DELETE FROM audit_log")
        conn.execute("DELETE FROM audit_tree_nodes")
        conn.execute("DELETE FROM audit_tree_head")
        conn.execute("UPDATE audit_head SET seq = 0, hash = ?", (GENESIS_HASH,))

    alone = verify(root)
    code, out = verify(root, "--trusted-head", str(witness))

    assert alone[0] == 0 and "intact: 0 entries" in alone[1]
    assert code == 1 and f"wiped: it holds no entries but the trusted head ({WITNESSED} entries" in out


def _rewrite(root: Path, seq: int, subject: str) -> None:
    """Alter one entry and recompute every chain hash after it, the chain head and the tree nodes."""
    with sqlite3.connect(root / "registry.db") as conn:
        conn.row_factory = sqlite3.Row
        conn.execute("UPDATE audit_log SET subject = ? WHERE seq = ?", (subject, seq))
        rows = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]
        prev, tree = GENESIS_HASH, MemoryNodes()
        for row in rows:
            row["details"] = json.loads(row["details"])
            fields = {k: row[k] for k in ("seq", "created_at", "actor", "action", "subject", "details")}
            row["prev_hash"], row["hash"] = prev, entry_hash(prev_hash=prev, **fields)
            conn.execute(
                "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, row["hash"], row["seq"])
            )
            prev = row["hash"]
            tree.append(leaf_hash(leaf_data(row)))
        conn.execute("UPDATE audit_head SET hash = ?", (prev,))
        conn.execute("DELETE FROM audit_tree_nodes")
        conn.executemany(
            "INSERT INTO audit_tree_nodes (level, idx, hash) VALUES (?, ?, ?)",
            [(lvl, idx, h.hex()) for (lvl, idx), h in tree.store.items()],
        )
        conn.execute("DELETE FROM audit_tree_head")  # the writer cannot sign: it removes the head


def test_a_rewritten_row_with_recomputed_hashes_is_seen_even_after_the_registry_signs_it(
    registry_copy: tuple[Path, Path, dict[str, object]],
) -> None:
    root, witness, _ = registry_copy
    _rewrite(root, 2, "digits@forged")

    unsigned = verify(root)
    # The registry signs whatever its database holds (here, when a head is next asked for) ...
    assert run_fedge("audit", "head", "--root", str(root), cwd=root.parent).returncode == 0
    alone = verify(root)
    code, out = verify(root, "--trusted-head", str(witness))

    assert unsigned[0] == 1 and "no signed tree head covers the 8 entries" in unsigned[1]
    assert alone[0] == 0  # ... so only an earlier head, kept elsewhere, shows the rewrite
    assert code == 1 and f"rewritten: its first {WITNESSED} entries no longer hash to the trusted head" in out


def test_a_rewritten_row_is_seen_from_the_stored_signed_head(
    registry_copy: tuple[Path, Path, dict[str, object]],
) -> None:
    root, _, _ = registry_copy
    with sqlite3.connect(root / "registry.db") as conn:
        conn.row_factory = sqlite3.Row
        kept = dict(conn.execute("SELECT * FROM audit_tree_head").fetchone())
    _rewrite(root, 5, "digits@forged")
    with sqlite3.connect(root / "registry.db") as conn:  # the signed head put back as it was
        conn.execute(
            "INSERT INTO audit_tree_head "
            "VALUES (:id, :tree_size, :root_hash, :timestamp, :key_id, :signature)",
            kept,
        )

    code, out = verify(root)

    assert code == 1 and f"the first {ENTRIES} entries no longer hash to the signed tree head's root" in out


def test_a_forged_trusted_head_or_a_foreign_key_is_refused(
    registry_copy: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    root, witness, _ = registry_copy
    forged = json.loads(witness.read_text())
    forged["tree_size"] = 2
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    (tmp_path / "garbage.json").write_text("{not json")

    code, out = verify(root, "--trusted-head", str(tmp_path / "forged.json"))
    bad_code, bad_out = verify(root, "--trusted-head", str(tmp_path / "garbage.json"))

    assert code == 1 and "is not signed by the given public key" in out
    assert bad_code == 2 and "garbage.json is not JSON" in bad_out


def test_migrating_a_registry_backfills_the_tree_the_appends_would_have_built(tmp_path: Path) -> None:
    from registry import open_engine
    from registry.migrate import upgrade_schema

    root = tmp_path / "reg"
    registry = open_registry(RegistryConfig(root=str(root)))
    for i in range(5):
        registry.store.append_audit(action="x", actor="a", subject=f"s{i}", details={"i": [i, "é"]})
    registry.close()
    db = root / "registry.db"
    with sqlite3.connect(db) as conn:
        nodes = sorted(conn.execute("SELECT level, idx, hash FROM audit_tree_nodes"))
        conn.execute("DROP TABLE audit_tree_nodes")
        conn.execute("DROP TABLE audit_tree_head")
        conn.execute("DROP TABLE webhook_deliveries")  # migration 0004's: a registry at 0002 has none
        conn.execute("UPDATE alembic_version SET version_num = '0002'")
    engine = open_engine(f"sqlite:///{db}")
    upgrade_schema(engine)
    engine.dispose()

    with sqlite3.connect(db) as conn:
        assert sorted(conn.execute("SELECT level, idx, hash FROM audit_tree_nodes")) == nodes
    unsigned = verify(root)
    assert unsigned[0] == 1 and "fedge audit head` signs one" in unsigned[1]
    assert run_fedge("audit", "head", "--root", str(root), cwd=tmp_path).returncode == 0
    assert verify(root)[0] == 0
