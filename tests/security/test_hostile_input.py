"""Hostile input to the operator API: huge integers, lone surrogates, large or unauthenticated bodies.

Real app, real SQLite registry and token store (TestClient); every answer is a 4xx naming what was
wrong, never a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings
from fedge.http_limits import MAX_ID, RequestLimits, lone_surrogate_path
from registry import RegistryConfig
from tests.apps import device_token, operator_app

HUGE = [2**63, 2**64, -(2**63) - 1]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    app, tokens = operator_app(
        CoordinatorSettings(registry=config, limits=RequestLimits(default_body_bytes=4096))
    )
    tokens["device"] = device_token(config.resolved_database_url(), "cam-17")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# (method, path, JSON body or None, role): {n} is replaced by the hostile integer.
INTEGER_ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/api/v1/registry/versions?limit={n}", None, "viewer"),
    ("GET", "/api/v1/registry/versions/{n}", None, "viewer"),
    ("GET", "/api/v1/registry/versions/digits:{n}", None, "viewer"),
    ("GET", "/api/v1/registry/versions/{n}/artifacts/onnx", None, "viewer"),
    ("GET", "/api/v1/registry/versions/digits:{n}/bundle", None, "viewer"),
    ("GET", "/api/v1/registry/versions/{n}/approvals", None, "viewer"),
    ("POST", "/api/v1/registry/versions/digits:{n}/approvals", {"alias": "production"}, "operator"),
    ("POST", "/api/v1/registry/promotions",
     {"moves": [{"version": "digits:{n}", "alias": "production"}], "reason": "r"}, "operator"),
    ("POST", "/api/v1/registry/promotions",
     {"moves": [{"version": " {n}", "alias": "production"}], "reason": "r"}, "operator"),  # a string
    ("GET", "/api/v1/registry/runs?limit={n}", None, "viewer"),
    ("GET", "/api/v1/registry/audit?after_seq={n}", None, "operator"),
    ("GET", "/api/v1/registry/audit?limit={n}", None, "operator"),
    ("GET", "/api/v1/audit/consistency?from={n}", None, "viewer"),
    ("GET", "/api/v1/runs?limit={n}", None, "viewer"),
    ("DELETE", "/api/v1/tokens/{n}", None, "admin"),
    ("GET", "/api/v1/drift/reports?version={n}", None, "viewer"),
    ("POST", "/api/v1/drift/evaluate", {"model": "digits", "version": "{n}"}, "operator"),
    ("POST", "/api/v1/drift/summaries",
     {"model": "digits", "version": "{n}", "window": 0, "window_size": 10, "counts": [[1.0]], "epsilon": 1.0},
     "device"),
    ("POST", "/api/v1/drift/summaries",
     {"model": "digits", "version": 1, "window": "{n}", "window_size": 10, "counts": [[1.0]],
      "epsilon": 1.0},
     "device"),
    ("POST", "/api/v1/edge/reports",
     {"model": {"name": "digits", "version": "1"}, "served": "{n}"}, "device"),
]  # fmt: skip


def _fill(template: Any, n: int) -> Any:
    """``template`` with every ``"{n}"`` as the integer ``n`` (inside a longer string: its digits)."""
    if template == "{n}":
        return n
    if isinstance(template, str):
        return template.replace("{n}", str(n))
    if isinstance(template, dict):
        return {k: _fill(v, n) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, n) for v in template]
    return template


@pytest.mark.parametrize("n", HUGE, ids=["2^63", "2^64", "-2^63-1"])
@pytest.mark.parametrize(("method", "path", "body", "role"), INTEGER_ROUTES, ids=lambda v: str(v)[:40])
def test_integers_beyond_the_database_are_refused_not_a_500(
    api: tuple[TestClient, dict[str, str]], n: int, method: str, path: str, body: Any, role: str
) -> None:
    client, tokens = api
    response = client.request(method, _fill(path, n), json=_fill(body, n), headers=bearer(tokens[role]))
    # A negative id in a version reference is no reference at all (404); everything else is a 422.
    negative_ref = n < 0 and ("versions/" in path or path.endswith("/promotions"))
    assert response.status_code == (404 if negative_ref else 422), response.text
    assert "Overflow" not in response.text


def test_a_version_reference_in_non_ascii_digits_is_refused(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    response = client.get("/api/v1/registry/versions/digits:\u00b2", headers=bearer(tokens["viewer"]))
    assert response.status_code == 422, response.text
    assert str(MAX_ID) in response.text


SURROGATE_ROUTES: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/tokens", {"name": "t\ud800", "role": "viewer"}, "admin"),
    ("/api/v1/runs", {"reason": "why \udfff"}, "operator"),
    ("/api/v1/registry/aliases", {"alias": "canary", "reason": "\ud83d"}, "admin"),
    ("/api/v1/registry/promotions", {"moves": [{"version": "1", "alias": "production"}], "reason": "\ud800"},
     "operator"),
    ("/api/v1/drift/evaluate", {"model": "d\ud800", "version": 1}, "operator"),
    ("/api/v1/edge/reports", {"model": {"name": "digits", "version": "1"}, "served": 1,
                              "health": {"\udc00": 1}}, "device"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "role"), SURROGATE_ROUTES, ids=lambda v: str(v)[:30])
def test_a_lone_surrogate_in_a_json_string_is_a_422_naming_where(
    api: tuple[TestClient, dict[str, str]], path: str, body: dict[str, Any], role: str
) -> None:
    client, tokens = api
    raw = json.dumps(body).encode()  # ASCII JSON: the surrogate travels as its \\uXXXX escape
    assert b"\\u" in raw
    response = client.post(
        path, content=raw, headers={**bearer(tokens[role]), "content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_text"
    assert error["message"].startswith("body.")


def test_a_lone_surrogate_without_a_content_type_is_refused_too(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = api
    raw = json.dumps({"name": "t\ud800", "role": "viewer"}).encode()
    response = client.post("/api/v1/tokens", content=raw, headers=bearer(tokens["admin"]))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("body.name:")


def test_a_valid_surrogate_pair_and_an_escaped_backslash_are_text(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = api
    raw = json.dumps({"name": "smile \U0001f600 \\ud800", "role": "viewer"}).encode()
    response = client.post(
        "/api/v1/tokens", content=raw, headers={**bearer(tokens["admin"]), "content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "smile \U0001f600 \\ud800"


def test_lone_surrogate_path_names_the_key() -> None:
    assert lone_surrogate_path(b'{"a": [1, {"b": "\\udead"}]}') == "body.a[1].b"
    assert lone_surrogate_path(b'{"a": "\\ud83d\\ude00"}') is None
    assert lone_surrogate_path(b"not json \\ud800") is None


def test_a_body_over_the_declared_limit_is_a_413_before_reading(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = api
    body = json.dumps({"name": "x" * 5000, "role": "viewer"})
    response = client.post(
        "/api/v1/tokens",
        content=body,
        headers={**bearer(tokens["admin"]), "content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "body_too_large"
    assert "4096" in response.json()["error"]["message"]


def test_a_chunked_body_is_counted_while_it_streams(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1000

    response = client.post(
        "/api/v1/tokens",
        content=chunks(),
        headers={**bearer(tokens["admin"]), "content-type": "application/json"},
    )
    assert response.status_code == 413, response.text


@pytest.mark.parametrize("header", [None, "Bearer fedge_not-a-token", "Basic abc"])
def test_an_unauthenticated_body_is_a_401_before_anything_else(
    api: tuple[TestClient, dict[str, str]], header: str | None
) -> None:
    client, _ = api
    headers = {"content-type": "application/json"} | ({"Authorization": header} if header else {})
    # Too large and not JSON: were it read or parsed first, the answer would be a 413 or a 422.
    response = client.post("/api/v1/runs", content=b"{" * 10_000, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"


def test_limits_are_per_route_by_longest_prefix() -> None:
    limits = RequestLimits(default_body_bytes=10, routes={"/api": 100, "/api/v1/drift": 1000})
    assert limits.body_bytes("/healthz") == 10
    assert limits.body_bytes("/api/v1/runs") == 100
    assert limits.body_bytes("/api/v1/drift/summaries") == 1000
    with pytest.raises(ValueError, match="byte count"):
        RequestLimits(default_body_bytes=-1)
