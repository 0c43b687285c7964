"""State on disk is private: folders 0700, databases (with their WAL files) and keys 0600, at creation.

The helper itself, then the real registry, edge state, client worker folder and certificate folder.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from edge.state import EdgeState
from fedge.private_fs import private_dir, private_file
from fedge.tls import generate_node_keypair, init_federation_tls
from registry import RegistryConfig, open_registry


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask():  # type: ignore[no-untyped-def]
    """The loosest common umask: what fedge creates must be private whatever the umask says."""
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_private_dir_makes_every_missing_folder_0700_and_tightens_ours(tmp_path: Path) -> None:
    existing = tmp_path / "old"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)

    made = private_dir(tmp_path / "a" / "b" / "c")
    private_dir(existing)

    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700, 0o700, 0o700]
    assert made == tmp_path / "a" / "b" / "c"
    assert mode(existing) == 0o700


def test_private_file_is_created_0600_and_an_old_wide_one_tightened(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    old.write_bytes(b"kept")
    os.chmod(old, 0o644)

    private_file(tmp_path / "new.db")
    private_file(old)

    assert mode(tmp_path / "new.db") == 0o600 and (tmp_path / "new.db").read_bytes() == b""
    assert mode(old) == 0o600 and old.read_bytes() == b"kept"


def test_a_folder_not_ours_is_left_alone_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)  # as if another user owned it

    with caplog.at_level(logging.WARNING, logger="fedge.private_fs"):
        private_dir(shared)
        private_dir(shared)

    assert mode(shared) == 0o755
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "has mode 755 and is not owned by this user" in warnings[0]


def test_a_new_registry_is_private_database_wal_and_signing_key_included(tmp_path: Path) -> None:
    root = tmp_path / "state" / ".fedge"
    registry = open_registry(RegistryConfig(root=str(root)))
    try:
        registry.put_artifact("onnx", b"model")
        registry.store.append_audit(action="test", actor="t", subject="s", details={})
        key = RegistryConfig(root=str(root)).resolved_signing_key()
        from fedge.crypto import load_or_create_private_key

        load_or_create_private_key(key)
        files = {p.name: mode(p) for p in root.iterdir() if p.is_file()}
        folders = [p for p in root.rglob("*") if p.is_dir()]
    finally:
        registry.close()

    assert mode(tmp_path / "state") == 0o700 and mode(root) == 0o700
    assert {"registry.db", "registry.db-wal", "registry.db-shm"} <= set(files)
    assert set(files.values()) == {0o600}
    assert {f.relative_to(root).as_posix() for f in folders} >= {"artifacts", "artifacts/sha256", "keys"}
    assert {mode(f) for f in folders} == {0o700}
    assert mode(key) == 0o600


def test_edge_state_and_certificate_folders_are_private(tmp_path: Path) -> None:
    state = EdgeState(tmp_path / "edge")
    bundle = state.save_bundle("digits", 3, b"zip bytes")
    init_federation_tls(tmp_path / "certs", ["localhost"])
    private, _public = generate_node_keypair(tmp_path / "node", "site-a")

    assert mode(tmp_path / "edge") == 0o700 and mode(tmp_path / "edge" / "versions") == 0o700
    assert mode(bundle.parent) == 0o700
    assert mode(tmp_path / "certs") == 0o700 and mode(tmp_path / "node") == 0o700
    assert mode(private) == 0o600
