"""Registry webhooks against a real receiver on 127.0.0.1: signed events, retries, the delivery log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedge.config import FedgeConfig, RegistryConfig, WebhookConfig
from fedge.errors import AuthenticationError, ConfigError, GateRefusedError
from fedge.webhook_signature import sign_payload, verify_signature
from registry import (
    AliasGate,
    GatesConfig,
    ModelVersionCreate,
    Registry,
    RunCreate,
    open_registry,
    promote,
)
from tests.webhook_receiver import Receiver

SECRET = "s3cret-for-tests"
SECRET_ENV = "FEDGE_TEST_WEBHOOK_SECRET"


def open_hooked(tmp_path: Path, url: str, events: list[str] | None = None) -> Registry:
    config = RegistryConfig(
        root=str(tmp_path / "reg"),
        webhooks=[WebhookConfig(url=url, events=events or [], secret_env=SECRET_ENV, max_attempts=3)],
    )
    registry = open_registry(config)
    assert registry.webhooks is not None
    registry.webhooks.backoff_base_s = 0.05  # retries within the test's patience
    return registry


def register(registry: Registry, accuracy: float = 0.95, extra: dict[str, float] | None = None) -> Any:
    if not registry.store.list_runs():
        registry.store.create_run(
            RunCreate(
                run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64
            )
        )
    return registry.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r",
            checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", f"model {accuracy}".encode()),),
            metrics={"central-accuracy": accuracy, "onnx-parity-max-abs-diff": 1e-6, **(extra or {})},
            lineage={},
            model_config={},
        ),
        aliases=("candidate",),
    )


def verified(delivery: dict[str, Any]) -> dict[str, Any]:
    headers = delivery["headers"]
    verify_signature(SECRET, headers["X-Fedge-Timestamp"], delivery["body"], headers["X-Fedge-Signature"])
    payload = json.loads(delivery["body"])
    assert payload["id"] == headers["X-Fedge-Delivery"]
    assert payload["event"] == headers["X-Fedge-Event"]
    assert payload["timestamp"] > 0
    return payload


def test_registering_a_version_posts_a_signed_version_registered_event(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    registry = open_hooked(tmp_path, receiver.url + "?token=abc", events=["version_registered"])
    try:
        version = register(registry, extra={"central-loss": float("nan")})
        assert registry.webhooks is not None and registry.webhooks.drain()
        [delivery] = receiver.received
        payload = verified(delivery)
        assert payload["event"] == "version_registered"
        assert payload["data"]["name"] == "digits" and payload["data"]["version_id"] == version.id
        assert payload["data"]["aliases"] == ["candidate"]
        assert payload["data"]["metrics"]["central-loss"] is None  # strict JSON: NaN is sent as null
        rows, total = registry.webhooks.store.list()
        assert total == 1 and rows[0].status == "delivered" and rows[0].attempts == 1
        assert rows[0].status_code == 200 and rows[0].url == receiver.url  # query (a credential) left out
    finally:
        registry.close()


def test_a_500_is_retried_and_the_log_shows_two_attempts(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver.codes = [500]
    registry = open_hooked(tmp_path, receiver.url, events=["version_registered"])
    try:
        register(registry)
        assert registry.webhooks is not None and registry.webhooks.drain()
        assert len(receiver.received) == 2
        first, second = (verified(d) for d in receiver.received)
        assert first["id"] == second["id"]  # one delivery, two attempts
        [row], _ = registry.webhooks.store.list()
        assert (row.status, row.attempts, row.status_code, row.last_error) == ("delivered", 2, 200, "")
    finally:
        registry.close()


def test_a_4xx_is_not_retried_and_is_logged_failed(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver.codes = [404]
    registry = open_hooked(tmp_path, receiver.url, events=["version_registered"])
    try:
        register(registry)
        assert registry.webhooks is not None and registry.webhooks.drain()
        assert len(receiver.received) == 1
        [row], _ = registry.webhooks.store.list()
        assert (row.status, row.attempts, row.status_code) == ("failed", 1, 404)
        assert "404" in row.last_error
    finally:
        registry.close()


def test_an_unreachable_receiver_never_fails_the_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    registry = open_hooked(tmp_path, "http://127.0.0.1:9/hook")  # discard port: connection refused
    try:
        version = register(registry)
        assert registry.store.get_version(version.id).number == 1
        assert registry.webhooks is not None and registry.webhooks.drain()
        rows, total = registry.webhooks.store.list()
        assert total == 2  # version_registered and alias_moved (candidate)
        assert {r.status for r in rows} == {"failed"} and {r.attempts for r in rows} == {3}
        assert all(r.status_code is None and r.last_error for r in rows)
    finally:
        registry.close()


def test_alias_moved_and_gate_refused_events(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    registry = open_hooked(tmp_path, receiver.url, events=["alias_moved", "gate_refused"])
    gates = GatesConfig(aliases={"production": AliasGate(min_metrics={"central-accuracy": 0.99})})
    try:
        version = register(registry, accuracy=0.95)
        promote(
            registry, moves=[(str(version.id), "staging")], actor="alice", reason="looks good", gates=gates
        )
        with pytest.raises(GateRefusedError):
            promote(
                registry, moves=[(str(version.id), "production")], actor="bob", reason="ship", gates=gates
            )
        assert registry.webhooks is not None and registry.webhooks.drain()
        events = [verified(d) for d in receiver.received]
        assert [e["event"] for e in events] == ["alias_moved", "alias_moved", "gate_refused"]
        registered, staged, refused = (e["data"] for e in events)
        assert (registered["alias"], registered["actor"]) == ("candidate", "system")
        assert (staged["alias"], staged["actor"], staged["reason"]) == ("staging", "alice", "looks good")
        assert refused["alias"] == "production" and refused["actor"] == "bob"
        assert "central-accuracy 0.9500 < 0.99" in refused["failed"]["min_metrics[central-accuracy]"]
    finally:
        registry.close()


def test_a_missing_secret_is_logged_and_nothing_is_sent(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    registry = open_hooked(tmp_path, receiver.url, events=["version_registered"])
    try:
        register(registry)
        assert registry.webhooks is not None and registry.webhooks.drain()
        assert receiver.received == []
        [row], _ = registry.webhooks.store.list()
        assert row.status == "failed" and SECRET_ENV in row.last_error
    finally:
        registry.close()


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ({"url": "ftp://127.0.0.1/x", "secret_env": "S"}, "http:// or https://"),
        ({"url": "file:///etc/passwd", "secret_env": "S"}, "http:// or https://"),
        ({"url": "http://127.0.0.1/x", "events": ["version_deleted"], "secret_env": "S"}, "unknown event"),
        ({"url": "http://127.0.0.1/x", "secret_env": "not a name!"}, "secret_env must name"),
        ({"url": "http://127.0.0.1/x", "secret_env": "S", "secret": "x"}, "unknown config key"),
        ({"url": "http://127.0.0.1/x", "secret_env": "S", "max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_webhook_config_is_refused_naming_what_is_wrong(hook: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        RegistryConfig.from_dict({"webhooks": [hook]})
    assert "registry.webhooks[0]" in str(raised.value)
    with pytest.raises(ConfigError, match=message):
        FedgeConfig.from_dict({"registry": {"webhooks": [hook]}})


def test_a_url_with_credentials_is_not_echoed_in_the_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        RegistryConfig.from_dict({"webhooks": [{"url": "gopher://user:hunter2@host/x", "secret_env": "S"}]})
    assert "hunter2" not in str(raised.value)


def test_verify_signature_accepts_the_signed_body_and_refuses_tampering_and_stale_timestamps() -> None:
    body = b'{"event":"version_registered"}'
    header = sign_payload(SECRET, 1_000_000, body)
    verify_signature(SECRET, "1000000", body, header, 300, now=1_000_100)
    with pytest.raises(AuthenticationError, match="does not match"):
        verify_signature(
            SECRET, "1000000", body.replace(b"registered", b"deleted"), header, 300, now=1_000_100
        )
    with pytest.raises(AuthenticationError, match="does not match"):
        verify_signature("another secret", "1000000", body, header, 300, now=1_000_100)
    with pytest.raises(AuthenticationError, match="does not match"):
        verify_signature(SECRET, "1000001", body, header, 300, now=1_000_100)  # timestamp is signed too
    with pytest.raises(AuthenticationError, match="tolerance"):
        verify_signature(SECRET, "1000000", body, header, 300, now=1_000_000 + 301)
    with pytest.raises(AuthenticationError, match="not an integer"):
        verify_signature(SECRET, "soon", body, header, 300, now=1_000_000)


def test_a_drift_trigger_posts_drift_triggered(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coordinator.drift.policy import PolicyDecision, RetrainTrigger
    from coordinator.drift.store import DriftReportStore
    from fedge.config import DriftPolicyConfig

    monkeypatch.setenv(SECRET_ENV, SECRET)
    registry = open_hooked(tmp_path, receiver.url, events=["drift_triggered"])
    store = DriftReportStore.from_url(f"sqlite:///{tmp_path / 'coordinator.db'}")
    try:
        register(registry)
        registry.store.update_run("r", status="completed")  # no training in progress: the policy fires
        trigger = RetrainTrigger(store=store, registry=registry, policy=DriftPolicyConfig(), launcher=None)
        decision = PolicyDecision(True, "persistent", "psi above 0.2 in 3 windows", {"windows": [1, 2, 3]})
        fired = trigger.apply(decision, model="digits", version=1)
        assert fired is not None and fired.outcome == "requested" and fired.run_id
        assert registry.webhooks is not None and registry.webhooks.drain()
        [event] = [verified(d) for d in receiver.received]
        assert event["event"] == "drift_triggered"
        assert event["data"]["name"] == "digits" and event["data"]["number"] == 1
        assert event["data"]["run_id"] == fired.run_id and "psi above 0.2" in event["data"]["reason"]
    finally:
        store.close()
        registry.close()
