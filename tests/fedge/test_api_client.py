"""The kernel's API client: against the real coordinator app, and a faked network for its edge cases."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings
from fedge.api_client import DIGEST_HEADER, ApiClient, error_from_response
from fedge.errors import (
    ArtifactError,
    AuthenticationError,
    ConfigError,
    FedgeError,
    NotFoundError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from registry import RegistryConfig
from tests.apps import operator_app

TOKEN = "fedge_secret-token-value"
BODY = b"model bytes " * 1000


# --- factories ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The real operator API (no deployment) and a token per role."""
    config = RegistryConfig(root=str(tmp_path_factory.mktemp("reg")))
    app, tokens = operator_app(CoordinatorSettings(registry=config))
    with TestClient(app) as client:
        yield client, tokens


def api_of(coordinator: tuple[TestClient, dict[str, str]], role: str | None) -> ApiClient:
    client, tokens = coordinator
    token = tokens[role] if role else "fedge_not-a-real-token"
    return ApiClient(str(client.base_url) + "/api/v1", token=token, client=client)


def faked(handler: Callable[[httpx.Request], httpx.Response], **kwargs: object) -> ApiClient:
    """A real ApiClient whose network is ``handler``."""
    return ApiClient("http://fedge.test/api", token=TOKEN, transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def serving(body: bytes, *, digest: str | None = None, length: bool = True) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {DIGEST_HEADER: digest if digest is not None else hashlib.sha256(body).hexdigest()}
        if not length:  # a chunked answer: the size is only known while reading
            return httpx.Response(200, headers=headers, content=iter([body[:5000], body[5000:]]))
        return httpx.Response(200, headers=headers, content=body)

    return faked(handler)


# --- the envelope, against the real app -----------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "method", "path", "error", "code", "status", "exit_code"),
    [
        ("viewer", "GET", "/runs/no-such-run", NotFoundError, "not_found", 404, 1),
        (None, "GET", "/runs", AuthenticationError, "unauthenticated", 401, 1),
        ("viewer", "POST", "/runs/no-such-run/stop", PermissionDeniedError, "forbidden", 403, 1),
    ],
)
def test_an_error_envelope_raises_the_class_the_server_raised(
    coordinator: tuple[TestClient, dict[str, str]],
    role: str | None,
    method: str,
    path: str,
    error: type[FedgeError],
    code: str,
    status: int,
    exit_code: int,
) -> None:
    api = api_of(coordinator, role)

    with pytest.raises(error, match=rf"\(HTTP {status}\)$") as info:
        api.call(method, path)

    assert type(info.value) is error
    assert info.value.code == code and info.value.exit_code == exit_code


def test_a_refused_config_is_a_config_error_with_exit_code_2(
    coordinator: tuple[TestClient, dict[str, str]],
) -> None:
    api = api_of(coordinator, "operator")

    with pytest.raises(ConfigError, match=r"strategy\.nope.*\(HTTP 422\)") as info:
        api.post_json("/runs", {"config": "config", "overrides": ["strategy.nope=1"], "reason": "test"})

    assert info.value.code == "config_invalid" and info.value.exit_code == 2


def test_json_comes_back_parsed(coordinator: tuple[TestClient, dict[str, str]]) -> None:
    with api_of(coordinator, "viewer") as api:
        runs = api.get_json("/runs")

    assert runs == []


# --- the network's edge cases, faked ------------------------------------------------------------
def test_an_error_that_is_not_an_envelope_names_the_status() -> None:
    api = faked(lambda _: httpx.Response(502, text="<html>Bad Gateway</html>"))

    with pytest.raises(FedgeError, match=r"^HTTP 502: <html>Bad Gateway") as info:
        api.call("GET", "/runs")

    assert type(info.value) is FedgeError and info.value.code == "fedge_error"


def test_a_non_envelope_422_is_a_config_error() -> None:
    response = httpx.Response(422, text="bad field")

    error = error_from_response(response)

    assert isinstance(error, ConfigError) and "bad field" in str(error) and "HTTP 422" in str(error)


def test_an_unreachable_host_names_the_url_not_the_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = faked(refuse, service="the registry", unreachable=RegistryUnavailableError)

    with pytest.raises(
        RegistryUnavailableError, match=r"cannot reach the registry at http://fedge.test/api"
    ) as info:
        api.call("GET", "/versions")

    assert TOKEN not in str(info.value) and "connection refused" in str(info.value)
    assert info.value.exit_code == 3 and isinstance(info.value.__cause__, httpx.ConnectError)


def test_a_closed_port_on_loopback_is_unreachable() -> None:
    with ApiClient("http://127.0.0.1:9", token=TOKEN, timeout=5) as api, pytest.raises(FedgeError) as info:
        api.call("GET", "/anything")

    assert "cannot reach the coordinator at http://127.0.0.1:9" in str(info.value)
    assert TOKEN not in str(info.value)


def test_credentials_in_the_url_stay_out_of_messages() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    api = ApiClient("http://user:hunter2@fedge.test", transport=httpx.MockTransport(refuse))

    with pytest.raises(FedgeError) as info:
        api.call("GET", "/x")

    assert "hunter2" not in str(info.value) and "fedge.test" in str(info.value)


def test_the_token_is_sent_as_a_bearer_header() -> None:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json={"ok": True})

    assert faked(record).get_json("/status") == {"ok": True}
    assert seen == [f"Bearer {TOKEN}"]


# --- downloads ------------------------------------------------------------------------------------
def test_a_download_matching_its_digest_is_written(tmp_path: Path) -> None:
    dest = tmp_path / "bundle.zip"

    digest = serving(BODY).download("/bundle", dest, max_bytes=len(BODY))

    assert dest.read_bytes() == BODY and digest == hashlib.sha256(BODY).hexdigest()
    assert list(tmp_path.iterdir()) == [dest]


def test_a_digest_mismatch_removes_the_partial_file(tmp_path: Path) -> None:
    dest = tmp_path / "bundle.zip"

    with pytest.raises(ArtifactError, match="cut or altered in transit") as info:
        serving(BODY, digest="0" * 64).download("/bundle", dest, max_bytes=10 * len(BODY))

    assert info.value.reason == "download_incomplete"
    assert list(tmp_path.iterdir()) == [], "neither the file nor its .part is left"


def test_a_digest_given_by_the_caller_wins_over_the_header() -> None:
    with pytest.raises(ArtifactError, match="cut or altered in transit"):
        serving(BODY).download_bytes("/bundle", max_bytes=len(BODY), sha256="f" * 64)


def test_a_missing_digest_header_is_refused() -> None:
    with pytest.raises(ArtifactError, match="none"):
        serving(BODY, digest="").download_bytes("/bundle", max_bytes=len(BODY))


@pytest.mark.parametrize("length", [True, False], ids=["declared", "chunked"])
def test_a_body_over_the_size_limit_is_refused_and_removed(tmp_path: Path, length: bool) -> None:
    dest = tmp_path / "bundle.zip"

    with pytest.raises(ArtifactError, match=f"over the limit of {len(BODY) - 1}") as info:
        serving(BODY, length=length).download("/bundle", dest, max_bytes=len(BODY) - 1)

    assert info.value.reason == "too_large"
    assert list(tmp_path.iterdir()) == []


def test_a_refused_download_raises_the_envelope_error(tmp_path: Path) -> None:
    api = faked(
        lambda _: httpx.Response(404, json={"error": {"code": "not_found", "message": "no version 9"}})
    )

    with pytest.raises(NotFoundError, match=r"no version 9 \(HTTP 404\)"):
        api.download("/versions/9/bundle", tmp_path / "b.zip", max_bytes=100)

    assert list(tmp_path.iterdir()) == []
