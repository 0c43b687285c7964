"""GET /api/v1/audit/head and /audit/consistency: real app, real SQLite registry, TestClient transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings, create_app
from fedge.crypto import load_public_key, public_key_path_for
from fedge.transparency import SignedTreeHead, verify_consistency
from registry import Registry, RegistryConfig
from tests.apps import role_tokens


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Registry, RegistryConfig]]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    app = create_app(CoordinatorSettings(registry=config))
    tokens = role_tokens(config.resolved_database_url())
    with TestClient(app) as client:
        yield client, tokens, app.state.registry, config


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_viewer_reads_signed_heads_and_proves_an_old_head_is_a_prefix(api) -> None:
    client, tokens, registry, config = api
    viewer = auth(tokens["viewer"])
    for i in range(3):
        registry.store.append_audit(action="x", actor="a", subject=f"s{i}", details={})
    key = load_public_key(public_key_path_for(config.resolved_signing_key()))  # created at the first append
    old = SignedTreeHead.from_dict(client.get("/api/v1/audit/head", headers=viewer).json())
    for i in range(10):
        registry.store.append_audit(action="x", actor="a", subject=f"t{i}", details={})

    answer = client.get("/api/v1/audit/head", headers=viewer)
    new = SignedTreeHead.from_dict(answer.json())
    proof = client.get(
        "/api/v1/audit/consistency", params={"from": old.tree_size, "to": new.tree_size}, headers=viewer
    )
    default_to = client.get("/api/v1/audit/consistency", params={"from": old.tree_size}, headers=viewer)

    assert answer.status_code == 200 and old.verify(key) and new.verify(key)
    assert new.tree_size == old.tree_size + 10 == len(registry.store.list_audit())
    body = proof.json()
    assert proof.status_code == 200 and (body["from"], body["to"]) == (old.tree_size, new.tree_size)
    hashes = [bytes.fromhex(h) for h in body["proof"]]
    assert verify_consistency(old.tree_size, new.tree_size, old.root, new.root, hashes)
    assert not verify_consistency(old.tree_size, new.tree_size, new.root, old.root, hashes)
    assert default_to.json() == body


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"from": 5, "to": 2}, 422, "the old tree is larger"),
        ({"from": 1, "to": 999}, 422, "holds"),
        ({"from": -1}, 422, "from"),
        ({"from": 2**64}, 422, "from"),
        ({"to": 3}, 422, "from"),
    ],
)
def test_bad_ranges_are_422_naming_the_problem(api, params, status, words) -> None:
    client, tokens, registry, _ = api
    for i in range(3):
        registry.store.append_audit(action="x", actor="a", subject=f"s{i}", details={})

    answer = client.get("/api/v1/audit/consistency", params=params, headers=auth(tokens["viewer"]))

    assert answer.status_code == status and words in answer.text, answer.text


def test_without_a_token_both_are_401(api) -> None:
    client, _, _, _ = api
    assert client.get("/api/v1/audit/head").status_code == 401
    assert client.get("/api/v1/audit/consistency", params={"from": 0}).status_code == 401
