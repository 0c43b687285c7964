"""Authenticated telemetry: the real app on a real SQLite db, real tokens of every role and device tokens.

Drift summaries and device reports need a ``device`` token; the site is the token's device, never the
body's; each device has a token bucket and each drift window a cap on sites.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from coordinator.api import CoordinatorSettings, create_app
from coordinator.auth import TokenStore
from coordinator.telemetry_limits import TelemetryLimiter, TelemetryLimits
from fedge.config import DriftSettings
from fedge.errors import ConfigError, RateLimitedError
from registry import RegistryConfig
from tests.apps import role_tokens
from tests.coordinator.test_drift_monitoring import _reference, _register, _summary

SUMMARIES, REPORTS = "/api/v1/drift/summaries", "/api/v1/edge/reports"


def _report(**kw: Any) -> dict[str, Any]:
    return {"model": {"name": "digits", "version": "1"}, "served": 10, **kw}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str], store: TokenStore) -> None:
        self.client, self.tokens, self.store = client, tokens, store

    def device(self, device: str) -> dict[str, str]:
        return auth(self.store.create(name=f"token-{device}", role="device", device=device)[1])

    def reports(self) -> list[dict[str, Any]]:
        return list(self.client.get("/api/v1/drift/reports", headers=auth(self.tokens["viewer"])).json())

    def devices(self) -> list[dict[str, Any]]:
        return list(self.client.get("/api/v1/edge/devices", headers=auth(self.tokens["viewer"])).json())


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[[TelemetryLimits], Api]]:
    """The app with ``limits``, a registered version with a drift reference, a token per role."""
    with ExitStack() as stack:

        def make(limits: TelemetryLimits) -> Api:
            config = RegistryConfig(root=str(tmp_path / "reg"))
            settings = CoordinatorSettings(
                registry=config, drift=DriftSettings(min_window=100), telemetry=limits
            )
            app = create_app(settings)
            tokens = role_tokens(config.resolved_database_url())
            _register(app.state.registry, _reference())
            client = stack.enter_context(TestClient(app))
            return Api(client, tokens, app.state.tokens)

        yield make


@pytest.fixture
def api(make_api: Callable[[TelemetryLimits], Api]) -> Api:
    return make_api(TelemetryLimits())


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_only_a_device_token_posts_telemetry_other_roles_get_403_and_nothing_is_stored(
    api: Api, role: str
) -> None:
    summary = api.client.post(SUMMARIES, json=_summary("cam-17", 0), headers=auth(api.tokens[role]))
    report = api.client.post(REPORTS, json=_report(device="cam-17"), headers=auth(api.tokens[role]))

    for refused in (summary, report):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        assert f"has role {role!r}" in refused.text and "--role device --device NAME" in refused.text
    assert api.reports() == [] and api.devices() == []
    assert api.client.get("/api/v1/drift/triggers", headers=auth(api.tokens["viewer"])).json() == []


def test_a_device_posting_as_another_site_is_refused_naming_both(api: Api) -> None:
    cam17 = api.device("cam-17")

    summary = api.client.post(SUMMARIES, json=_summary("cam-18", 0), headers=cam17)
    report = api.client.post(REPORTS, json=_report(device="cam-18"), headers=cam17)

    for refused in (summary, report):
        assert refused.status_code == 403, refused.text
        assert "'cam-17'" in refused.text and "'cam-18'" in refused.text
    assert api.reports() == [] and api.devices() == []


def test_the_stored_site_and_device_are_the_tokens_whatever_the_body_leaves_out(api: Api) -> None:
    cam17 = api.device("cam-17")
    body = {k: v for k, v in _summary("ignored", 0).items() if k != "site"}

    without_site = api.client.post(SUMMARIES, json=body, headers=cam17)
    naming_itself = api.client.post(SUMMARIES, json=_summary("cam-17", 1), headers=cam17)
    report = api.client.post(REPORTS, json=_report(), headers=cam17)

    assert without_site.status_code == 201, without_site.text
    assert naming_itself.status_code == 201, naming_itself.text
    assert report.status_code == 201, report.text
    assert [(r["window"], r["sites"]) for r in api.reports()] == [(0, ["cam-17"]), (1, ["cam-17"])]
    assert [(d["device"], d["reported_by"]) for d in api.devices()] == [("cam-17", "token-cam-17")]


def test_a_device_token_reads_a_release_but_cannot_run_promote_or_manage_tokens(api: Api) -> None:
    cam17 = api.device("cam-17")
    c = api.client

    alias = c.get("/api/v1/registry/aliases/digits/production", headers=cam17)
    head = c.get("/api/v1/audit/head", headers=cam17)
    refused = {
        "run": c.post("/api/v1/runs", json={"overrides": []}, headers=cam17),
        "promote": c.post(
            "/api/v1/registry/promotions", json={"ref": "digits:1", "alias": "staging"}, headers=cam17
        ),
        "approve": c.post(
            "/api/v1/registry/versions/digits:1/approvals", json={"alias": "production"}, headers=cam17
        ),
        "tokens": c.get("/api/v1/tokens", headers=cam17),
        "new token": c.post("/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=cam17),
        "evaluate": c.post("/api/v1/drift/evaluate", json={"model": "digits", "version": 1}, headers=cam17),
        "drift reports": c.get("/api/v1/drift/reports", headers=cam17),
        "devices": c.get("/api/v1/edge/devices", headers=cam17),
        "audit log": c.get("/api/v1/registry/audit", headers=cam17),
    }

    assert alias.status_code == 200 and alias.json()["number"] == 1
    assert head.status_code in (200, 404), head.text  # a device may ask; 404 only without a signing key
    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 403)


def test_an_admin_creates_a_device_token_over_the_api_and_it_needs_its_device(api: Api) -> None:
    admin = auth(api.tokens["admin"])

    created = api.client.post(
        "/api/v1/tokens", json={"name": "cam", "role": "device", "device": "cam-17"}, headers=admin
    )
    unbound = api.client.post("/api/v1/tokens", json={"name": "cam", "role": "device"}, headers=admin)
    viewer_bound = api.client.post(
        "/api/v1/tokens", json={"name": "v", "role": "viewer", "device": "cam-17"}, headers=admin
    )

    assert created.status_code == 201 and created.json()["device"] == "cam-17"
    posted = api.client.post(REPORTS, json=_report(), headers=auth(created.json()["token"]))
    assert posted.status_code == 201 and api.devices()[0]["device"] == "cam-17"
    assert unbound.status_code == 422 and "--device" in unbound.text
    assert viewer_bound.status_code == 422 and "takes none" in viewer_bound.text
    listed = api.client.get("/api/v1/tokens", headers=admin).json()
    assert {t["name"]: t["device"] for t in listed}["cam"] == "cam-17"


def test_a_device_beyond_its_rate_gets_429_with_retry_after_and_others_are_not_slowed(
    make_api: Callable[[TelemetryLimits], Api],
) -> None:
    api = make_api(TelemetryLimits(rate_per_minute=1, burst=2))
    cam17, cam18 = api.device("cam-17"), api.device("cam-18")

    statuses = [api.client.post(REPORTS, json=_report(), headers=cam17).status_code for _ in range(2)]
    limited = api.client.post(SUMMARIES, json=_summary("cam-17", 0), headers=cam17)
    other = api.client.post(REPORTS, json=_report(), headers=cam18)

    assert statuses == [201, 201]
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["code"] == "rate_limited" and "'cam-17'" in limited.text
    assert int(limited.headers["Retry-After"]) >= 1
    assert api.reports() == [], "a refused summary is not stored"
    assert other.status_code == 201


def test_a_window_with_the_cap_of_sites_takes_no_new_site_but_the_next_window_does(
    make_api: Callable[[TelemetryLimits], Api],
) -> None:
    api = make_api(TelemetryLimits(max_sites_per_window=2))
    a, b, c = api.device("a"), api.device("b"), api.device("c")

    first = [
        api.client.post(SUMMARIES, json=_summary(s, 0), headers=h).status_code
        for s, h in (("a", a), ("b", b))
    ]
    capped = api.client.post(SUMMARIES, json=_summary("c", 0), headers=c)
    next_window = api.client.post(SUMMARIES, json=_summary("c", 1), headers=c)

    assert first == [201, 201]
    assert capped.status_code == 429 and "already has 2 sites (the cap is 2)" in capped.text
    assert "Retry-After" in capped.headers
    assert next_window.status_code == 201
    # each device numbers its own windows: one report per device and window, none merged
    assert sorted((r["stream"], r["window"], tuple(r["sites"])) for r in api.reports()) == [
        ("a", 0, ("a",)), ("b", 0, ("b",)), ("c", 1, ("c",)),
    ]  # fmt: skip


def test_the_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = TelemetryLimiter(TelemetryLimits(rate_per_minute=6, burst=1), clock=lambda: now[0])

    limiter.take("cam-17")
    with pytest.raises(RateLimitedError) as refused:
        limiter.take("cam-17")
    now[0] = 9.0
    with pytest.raises(RateLimitedError):
        limiter.take("cam-17")
    now[0] = 10.0
    limiter.take("cam-17")

    assert refused.value.retry_after == pytest.approx(10.0)


def test_limits_are_checked_and_device_names_are_required_and_printable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rate_per_minute must be > 0"):
        TelemetryLimits(rate_per_minute=0)
    with pytest.raises(ConfigError, match="max_sites_per_window must be >= 1"):
        TelemetryLimits(max_sites_per_window=0)
    store = TokenStore.from_url(f"sqlite:///{tmp_path / 't.db'}")
    try:
        with pytest.raises(ConfigError, match="add --device NAME"):
            store.create(name="cam", role="device")
        with pytest.raises(ConfigError, match="not usable"):
            store.create(name="cam", role="device", device=" cam-17")
        with pytest.raises(ConfigError, match="unknown role 'root'"):
            store.create(name="cam", role="root")
    finally:
        store.close()


def test_a_coordinator_database_at_the_baseline_gains_the_device_column_and_keeps_its_tokens(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = TokenStore.from_url(url)
    _, secret = store.create(name="dashboard", role="viewer")
    store.close()
    engine = create_engine(url)
    with engine.begin() as conn:  # back to revision 0001: what the previous release left
        conn.execute(text("ALTER TABLE api_tokens DROP COLUMN device"))
        conn.execute(text("UPDATE coordinator_alembic_version SET version_num = '0001'"))
    assert "device" not in {c["name"] for c in inspect(engine).get_columns("api_tokens")}
    engine.dispose()

    reopened = TokenStore.from_url(url)
    try:
        assert reopened.authenticate(secret).role == "viewer"
        info, _ = reopened.create(name="cam", role="device", device="cam-17")
        assert info.device == "cam-17"
    finally:
        reopened.close()
