"""client.witness against the real operator API (TestClient transport) and a real SQLite registry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from client.witness import witness_registry
from coordinator.api import CoordinatorSettings, create_app
from fedge.api_client import ApiClient
from fedge.audit_witness import AuditInconsistentError
from fedge.crypto import load_public_key, public_key_path_for
from registry import RegistryConfig
from tests.apps import role_tokens


def test_an_agent_follows_honest_growth_and_refuses_a_truncated_log(tmp_path: Path) -> None:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    app = create_app(CoordinatorSettings(registry=config))
    token = role_tokens(config.resolved_database_url())["viewer"]
    store = app.state.registry.store
    for i in range(4):
        store.append_audit(action="x", actor="a", subject=f"s{i}", details={})
    key = load_public_key(public_key_path_for(config.resolved_signing_key()))
    with TestClient(app) as http:
        api = ApiClient("http://testserver", token=token, client=http)
        assert witness_registry(api, tmp_path / "agent", key).tree_size == 4
        for i in range(3):
            store.append_audit(action="x", actor="a", subject=f"t{i}", details={})
        assert witness_registry(api, tmp_path / "agent", key).tree_size == 7

        # the database's writer deletes the last 5 entries, moves the chain head back and
        # removes their tree nodes: the registry then signs a head of 2 entries
        with sqlite3.connect(tmp_path / "reg" / "registry.db") as conn:
            last = conn.execute("SELECT hash FROM audit_log WHERE seq = 2").fetchone()[0]
            conn.execute("DELETE FROM audit_log WHERE seq > 2")
            conn.execute("UPDATE audit_head SET seq = 2, hash = ?", (last,))
            conn.execute("DELETE FROM audit_tree_head")
        with pytest.raises(
            AuditInconsistentError, match=r"cannot prove .* consistent with the head of 7 entries"
        ):
            witness_registry(api, tmp_path / "agent", key)
