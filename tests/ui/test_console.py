"""The console at /ui through the real app (TestClient): sign-in, sessions, CSRF, roles, pages, bounds."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings
from coordinator.auth import TokenStore
from fedge.serde import state_dict_to_safetensors
from registry import ModelVersionCreate, Registry, RegistryConfig, RunCreate, RunStatus
from tests.apps import operator_app

Console = tuple[TestClient, dict[str, str], Registry]


def _populate(registry: Registry) -> None:
    registry.store.create_run(
        RunCreate(
            run_id="r1", task="digits", strategy="fedavg", num_rounds=3, config={}, config_hash="0" * 64
        )
    )
    nodes = [
        {"node_id": 7, "name": "site-a", "data_fingerprint": "f" * 64, "data_rows": 120, "num_examples": 96},
        {"node_id": 8, "name": "site-b", "data_fingerprint": "e" * 64, "data_rows": 80, "num_examples": 64},
    ]
    for rnd in (1, 2, 3):
        registry.register_checkpoint(
            run_id="r1",
            round=rnd,
            weights=state_dict_to_safetensors({"w": torch.zeros(2)}, {"run_id": "r1"}),
            metrics={"central-accuracy": 0.5 + rnd / 10, "central-loss": 1.0 / rnd},
            lineage={"round": rnd, "nodes": nodes, "failed_nodes": 1 if rnd == 2 else 0},
        )
    registry.store.update_run("r1", status=RunStatus.COMPLETED)
    registry.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r1",
            checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", b"onnx"),),
            metrics={"central-accuracy": 0.9, "onnx-parity-max-abs-diff": 1e-6},
            lineage={"round": 3, "nodes": nodes, "privacy": {"mode": "central", "epsilon": 2.5}},
            model_config={},
        ),
        aliases=("candidate",),
    )


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    app, tokens = operator_app(CoordinatorSettings(registry=config))
    _populate(app.state.registry)
    with TestClient(app, base_url="http://testserver") as client:
        yield client, tokens, app.state.registry


def sign_in(client: TestClient, token: str) -> str:
    """Sign in; return the session's CSRF token (from a page's form)."""
    response = client.post("/ui/signin", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    page = client.get("/ui/registry/versions/digits:1").text
    return re.findall(r'name="csrf" value="([^"]+)"', page)[0]


def _refusal(response: Any) -> str:
    found = re.findall(r'class="flash error"[^>]*>\s*([^<]*)', response.text)
    return html.unescape(found[0]) if found else ""


# --- sign-in and sessions -------------------------------------------------------------------------
def test_pages_redirect_to_sign_in_without_a_session(console: Console) -> None:
    client, _, _ = console
    for path in ("/ui/runs", "/ui/registry", "/ui/drift", "/ui/fleet", "/ui/audit", "/ui/runs/r1"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/ui/signin"


def test_sign_in_sets_a_strict_httponly_cookie_and_never_echoes_the_token(console: Console) -> None:
    client, tokens, _ = console
    response = client.post("/ui/signin", data={"token": tokens["viewer"]}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert tokens["viewer"] not in cookie
    for path in ("/ui/runs", "/ui/runs/r1", "/ui/registry/versions/digits:1", "/ui/fleet", "/ui/drift"):
        page = client.get(path)
        assert page.status_code == 200 and tokens["viewer"] not in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert "<script>" not in page.text  # no inline script: CSP would block it


def test_a_wrong_or_device_token_is_refused_at_sign_in(console: Console, tmp_path: Path) -> None:
    client, _, _ = console
    bad = client.post("/ui/signin", data={"token": "fedge_not-a-token"})
    assert bad.status_code == 401 and "unknown or revoked" in _refusal(bad)
    store = TokenStore.from_url(RegistryConfig(root=str(tmp_path / "reg")).resolved_database_url())
    try:
        _, device = store.create(name="cam", role="device", device="cam-1")
    finally:
        store.close()
    refused = client.post("/ui/signin", data={"token": device})
    assert refused.status_code == 403 and "needs 'viewer'" in _refusal(refused)
    assert "fedge_console" not in refused.headers.get("set-cookie", "")


def test_sign_out_ends_the_session(console: Console) -> None:
    client, tokens, _ = console
    csrf = sign_in(client, tokens["viewer"])
    assert client.post("/ui/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    client.cookies.clear()  # the browser drops it; the server forgot the session too
    assert client.get("/ui/runs", follow_redirects=False).status_code == 303


def test_a_revoked_token_signs_its_session_out(console: Console, tmp_path: Path) -> None:
    client, tokens, _ = console
    sign_in(client, tokens["operator"])
    store = TokenStore.from_url(RegistryConfig(root=str(tmp_path / "reg")).resolved_database_url())
    try:
        (info,) = [t for t in store.list() if t.name == "operator-1"]
        store.revoke(info.id)
    finally:
        store.close()
    assert client.get("/ui/runs", follow_redirects=False).headers["location"] == "/ui/signin"


# --- CSRF and roles -------------------------------------------------------------------------------
def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(console: Console) -> None:
    client, tokens, registry = console
    sign_in(client, tokens["admin"])
    for data in ({"alias": "staging"}, {"alias": "staging", "csrf": "forged"}):
        response = client.post("/ui/registry/versions/digits:1/promote", data=data)
        assert response.status_code == 403 and "CSRF" in _refusal(response)
    assert registry.resolve("digits:1").aliases == ("candidate",)


def test_a_cross_origin_post_is_refused_even_with_the_csrf_token(console: Console) -> None:
    client, tokens, registry = console
    csrf = sign_in(client, tokens["admin"])
    for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
        response = client.post(
            "/ui/registry/versions/digits:1/promote", data={"csrf": csrf, "alias": "staging"}, headers=headers
        )
        assert response.status_code == 403
    assert registry.resolve("digits:1").aliases == ("candidate",)


def test_a_viewer_sees_no_buttons_and_its_posts_get_403_even_with_a_valid_csrf_token(
    console: Console,
) -> None:
    client, tokens, registry = console
    csrf = sign_in(client, tokens["viewer"])
    page = client.get("/ui/registry/versions/digits:1").text
    assert 'id="promote"' not in page and 'id="approve"' not in page
    for action in ("promote", "approve"):
        response = client.post(
            f"/ui/registry/versions/digits:1/{action}", data={"csrf": csrf, "alias": "staging"}
        )
        assert response.status_code == 403 and "needs 'operator'" in _refusal(response)
    assert client.get("/ui/audit").status_code == 403  # the API's audit routes need an operator too
    assert registry.resolve("digits:1").aliases == ("candidate",)
    assert registry.store.list_approvals(1) == []


def test_a_gate_refusal_shows_its_reason_then_approve_and_promote_succeed(console: Console) -> None:
    client, tokens, registry = console
    csrf = sign_in(client, tokens["operator"])
    refused = client.post(
        "/ui/registry/versions/digits:1/promote", data={"csrf": csrf, "alias": "production", "reason": "ship"}
    )
    assert refused.status_code == 409
    (reason,) = re.findall(r'id="refusal"[^>]*>([^<]*)', refused.text)
    assert "digits:1 -&gt; production: gate approvals failed: 0 of 1 approvals" in reason
    approved = client.post(
        "/ui/registry/versions/digits:1/approve", data={"csrf": csrf, "alias": "production"}
    )
    assert approved.status_code == 200 and "Approval recorded" in approved.text
    promoted = client.post(
        "/ui/registry/versions/digits:1/promote", data={"csrf": csrf, "alias": "production", "reason": "ship"}
    )
    assert promoted.status_code == 200 and "Promoted" in promoted.text
    assert "production" in registry.resolve("digits:1").aliases
    actions = [e.action for e in registry.store.list_audit()]
    assert "gate.refused" in actions and actions[-1] == "alias.moved"


def test_an_undeclared_alias_is_refused_with_the_declared_ones(console: Console) -> None:
    client, tokens, _ = console
    csrf = sign_in(client, tokens["operator"])
    response = client.post("/ui/registry/versions/digits:1/promote", data={"csrf": csrf, "alias": "nightly"})
    assert response.status_code == 422 and "declared aliases: candidate, production, staging" in response.text


def test_the_api_ignores_a_forged_console_marker(console: Console) -> None:
    client, _, _ = console
    headers = {"x-fedge-console-request": "1"}
    assert client.post("/api/v1/registry/promotions", json={"moves": []}, headers=headers).status_code == 401


# --- pages, pagination, 404 -----------------------------------------------------------------------
def test_the_run_page_has_one_chart_point_per_round_and_its_participants(console: Console) -> None:
    client, tokens, _ = console
    sign_in(client, tokens["viewer"])
    page = client.get("/ui/runs/r1").text
    assert re.findall(r'data-points="(\d+)"', page) == ["3"]
    assert "site-a" in page and "site-b" in page and "f" * 16 in page
    assert "<td>2</td><td>2</td><td>1</td>" in page  # round 2: two participants, one dropped node


def test_the_version_page_draws_the_lineage_and_names_what_each_gate_lacks(console: Console) -> None:
    client, tokens, _ = console
    sign_in(client, tokens["viewer"])
    page = client.get("/ui/registry/versions/digits:1").text
    assert "<svg" in page and "site-a" in page and "run r1" in page and "ε spent 2.5" in page
    assert "0 of 1 approvals from distinct operators: 1 missing" in page


@pytest.mark.parametrize("page", ["0", "-1", "abc", "401", "1e3", "\uff19"])
def test_a_bad_page_number_is_a_400_page(console: Console, page: str) -> None:
    client, tokens, _ = console
    sign_in(client, tokens["operator"])
    for path in ("/ui/runs", "/ui/registry", "/ui/drift", "/ui/fleet", "/ui/audit"):
        response = client.get(path, params={"page": page})
        assert response.status_code == 400 and "page must be a whole number" in _refusal(response)


def test_lists_are_paginated(console: Console) -> None:
    client, tokens, registry = console
    for i in range(30):
        registry.store.create_run(
            RunCreate(
                run_id=f"x{i:02d}",
                task="digits",
                strategy="fedavg",
                num_rounds=1,
                config={},
                config_hash="0" * 64,
            )
        )
    sign_in(client, tokens["viewer"])
    first = client.get("/ui/runs").text
    second = client.get("/ui/runs", params={"page": 2}).text
    assert first.count('href="/ui/runs/') == 25 and second.count('href="/ui/runs/') == 6
    assert 'rel="next"' in first and 'rel="next"' not in second
    assert client.get("/ui/runs", params={"page": 3}).status_code == 404


def test_unknown_runs_versions_and_pages_are_404_pages(console: Console) -> None:
    client, tokens, _ = console
    sign_in(client, tokens["viewer"])
    for path in (
        "/ui/runs/nope",
        "/ui/registry/versions/digits:9",
        "/ui/registry/versions/nope@production",
        "/ui/registry/versions/99999999999999999999",
        "/ui/nothing",
    ):
        response = client.get(path)
        assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
