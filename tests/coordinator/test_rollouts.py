"""Staged rollouts through the real API (TestClient, real SQLite registry): cohorts, validation,
per-device resolution, widening and halting judged on device reports, the audit trail."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings, create_app
from coordinator.rollouts import Rollout, cohort_point, parse_steps
from coordinator.telemetry_limits import TelemetryLimits
from fedge.config.schemas import AliasGate, GatesConfig
from fedge.errors import ConfigError
from registry import ModelVersionCreate, Registry, RegistryConfig
from tests.apps import device_token, role_tokens

ROLLOUTS = "/api/v1/rollouts"
FLEET = [f"cam-{i}" for i in range(6)]


def _api(tmp_path: Path, gates: GatesConfig) -> Iterator[tuple[TestClient, dict[str, str], Registry]]:
    config = RegistryConfig(root=str(tmp_path / "reg"), gates=gates)
    app = create_app(CoordinatorSettings(registry=config, telemetry=TelemetryLimits(burst=1000)))
    url = config.resolved_database_url()
    tokens = role_tokens(url)
    tokens.update({device: device_token(url, device) for device in FLEET})
    registry: Registry = app.state.registry
    for content in (b"one", b"two"):
        registry.register_version(
            ModelVersionCreate("digits", None, None, (registry.put_artifact("onnx", content),), {}, {}, {}),
            aliases=("production",) if content == b"one" else (),
        )
    with TestClient(app) as client:
        yield client, tokens, registry


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Registry]]:
    """No promotion gates: these tests are about steps and reports (gated rollouts are tested below)."""
    yield from _api(tmp_path, GatesConfig(aliases={}))


@pytest.fixture
def gated_api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Registry]]:
    """``production`` needs one approval (the only gate these unevaluated versions can pass)."""
    yield from _api(tmp_path, GatesConfig(aliases={"production": AliasGate(required_approvals=1)}))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start(client: TestClient, token: str, **changes: Any) -> Any:
    body = {"model": "digits", "alias": "production", "version": "2", "steps": ["0.5", "1.0"],
            "min_healthy_s": 0, **changes}  # fmt: skip
    return client.post(ROLLOUTS, json=body, headers=auth(token))


def resolved(client: TestClient, token: str, device: str) -> tuple[int, str | None]:
    r = client.get(
        "/api/v1/registry/aliases/digits/production", params={"device": device}, headers=auth(token)
    )
    assert r.status_code == 200, r.text
    return r.json()["number"], r.headers.get("x-fedge-rollout")


def report(client: TestClient, token: str, version: int, **health: Any) -> None:
    body = {"model": {"name": "digits", "version": str(version)}, "served": 1,
            "health": {"status": "ok", "last_result": "unchanged", **health}}  # fmt: skip
    assert client.post("/api/v1/edge/reports", json=body, headers=auth(token)).status_code == 201


# --- cohorts -----------------------------------------------------------------------------------------
def test_cohort_point_is_sha256_of_model_alias_device_and_stable() -> None:
    digest = hashlib.sha256(b"digits@production:cam-1").digest()
    assert cohort_point("digits", "production", "cam-1") == int.from_bytes(digest[:8], "big") / 2.0**64
    assert cohort_point("digits", "production", "cam-1") != cohort_point("digits", "staging", "cam-1")
    points = [cohort_point("digits", "production", f"dev-{i}") for i in range(4000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert 0.28 < sum(p < 0.33 for p in points) / len(points) < 0.38  # fractions select about that share


def test_cohorts_grow_with_the_steps_and_groups_add_named_devices() -> None:
    rollout = Rollout(
        1, "digits", "production", 1, 1, 2, 2, ["lab", "0.5", "1.0"], {"lab": ["cam-0"]}, 0, 0, 1,
        "active", 0, None, "ops", "", [],  # type: ignore[arg-type]
    )  # fmt: skip
    devices = [f"dev-{i}" for i in range(200)]
    first = {d for d in devices if rollout.in_cohort(d, 0)}
    second = {d for d in devices if rollout.in_cohort(d, 1)}
    assert first == set() and rollout.in_cohort("cam-0", 0)
    assert second == {d for d in devices if cohort_point("digits", "production", d) < 0.5}
    assert all(rollout.in_cohort(d, 2) for d in devices)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["0.5", "0.3", "1.0"], "must increase"),
        (["0", "1.0"], "in (0, 1]"),
        (["1.5"], "in (0, 1]"),
        (["nan", "1.0"], "in (0, 1]"),
        (["0.5"], "last step must be 1.0"),
        (["canary", "1.0"], "neither a fraction"),
        ([], "at least one step"),
    ],
)
def test_bad_steps_are_refused_naming_the_step(steps: list[str], message: str) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        parse_steps(steps, {})


# --- the API -----------------------------------------------------------------------------------------
def test_api_validates_steps_versions_and_roles(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _ = api
    decreasing = start(client, tokens["operator"], steps=["0.5", "0.2", "1.0"])
    unknown = start(client, tokens["operator"], version="9")
    same = start(client, tokens["operator"], version="1")
    viewer = start(client, tokens["viewer"])
    device = start(client, tokens["cam-0"])
    bad_group = start(client, tokens["operator"], steps=["lab", "1.0"], groups={"lab": []})

    assert decreasing.status_code == 422 and "must increase" in decreasing.json()["error"]["message"]
    assert unknown.status_code == 404
    assert same.status_code == 409
    assert viewer.status_code == 403 and device.status_code == 403
    assert bad_group.status_code == 422 and "'lab'" in bad_group.json()["error"]["message"]
    assert client.get(f"{ROLLOUTS}/77", headers=auth(tokens["viewer"])).status_code == 404
    assert client.get(ROLLOUTS, headers=auth(tokens["viewer"])).json() == []


def test_a_rollout_widens_on_healthy_reports_then_completes_and_moves_the_alias(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, registry = api
    started = start(client, tokens["operator"])
    assert started.status_code == 201, started.text
    rid = started.json()["id"]
    assert start(client, tokens["operator"]).status_code == 409  # one active rollout per alias
    cohort = {d for d in FLEET if cohort_point("digits", "production", d) < 0.5}
    assert 0 < len(cohort) < len(FLEET)  # the fleet is split, or this test proves nothing
    for device in FLEET:  # everyone reports on the old version first: the fleet is known
        report(client, tokens[device], 1)

    answers = {d: resolved(client, tokens["viewer"], d) for d in FLEET}
    assert {d for d, (n, _) in answers.items() if n == 2} == cohort
    assert all(("cohort=canary" in h) == (d in cohort) for d, (_, h) in answers.items() if h)
    plain = client.get("/api/v1/registry/aliases/digits/production", headers=auth(tokens["viewer"]))
    assert plain.json()["number"] == 1 and "x-fedge-rollout" not in plain.headers

    for device in cohort:
        report(client, tokens[device], 2)
    status = client.get(f"{ROLLOUTS}/{rid}", headers=auth(tokens["viewer"])).json()
    assert (status["state"], status["step"]) == ("active", 1)
    assert all(resolved(client, tokens["viewer"], d)[0] == 2 for d in FLEET)

    for device in FLEET:
        report(client, tokens[device], 2, requests=10, errors=0, error_rate=0.0, p99_ms=3.0)
    status = client.get(f"{ROLLOUTS}/{rid}", headers=auth(tokens["viewer"])).json()
    assert status["state"] == "complete"
    assert [e["event"] for e in status["timeline"]] == ["start", "widen", "complete"]
    assert registry.store.get_alias("digits", "production").number == 2
    actions = [e.action for e in registry.store.list_audit() if e.action.startswith("rollout.")]
    assert actions == ["rollout.start", "rollout.widen", "rollout.complete"]


@pytest.mark.parametrize(
    "health",
    [
        {"last_result": "refused", "last_version": "digits:2", "last_reason": "health_check"},
        {"error_rate": 0.5, "requests": 10, "errors": 5},
        {"p99_ms": 5000.0},
        {"status": "failed"},
    ],
)
def test_a_failing_cohort_device_halts_and_only_the_cohort_goes_back(api, health: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    client, tokens, registry = api
    rid = start(client, tokens["operator"], steps=["canary", "1.0"], groups={"canary": ["cam-0", "cam-1"]},
                max_error_rate=0.1, max_p99_ms=100).json()["id"]  # fmt: skip
    assert resolved(client, tokens["viewer"], "cam-0")[0] == 2
    assert resolved(client, tokens["viewer"], "cam-5")[0] == 1
    version = 1 if health.get("last_result") == "refused" else 2
    report(client, tokens["cam-5"], 1, error_rate=0.9)  # not in the cohort: not judged
    assert client.get(f"{ROLLOUTS}/{rid}", headers=auth(tokens["viewer"])).json()["state"] == "active"

    report(client, tokens["cam-1"], version, **health)

    status = client.get(f"{ROLLOUTS}/{rid}", headers=auth(tokens["viewer"])).json()
    assert status["state"] == "halted" and status["reason"].startswith("cam-1")
    assert {resolved(client, tokens["viewer"], d)[0] for d in FLEET} == {1}
    assert registry.store.get_alias("digits", "production").number == 1
    halt = [e for e in registry.store.list_audit() if e.action == "rollout.halt"]
    assert len(halt) == 1 and halt[0].details["device"] == "cam-1" and halt[0].actor == "rollout"


def test_an_operator_halts_a_rollout_and_a_halted_one_cannot_be_halted_again(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, registry = api
    rid = start(client, tokens["operator"], steps=["1.0"]).json()["id"]
    viewer = client.post(f"{ROLLOUTS}/{rid}/halt", json={"reason": "x"}, headers=auth(tokens["viewer"]))
    halted = client.post(
        f"{ROLLOUTS}/{rid}/halt", json={"reason": "looks off"}, headers=auth(tokens["operator"])
    )
    again = client.post(f"{ROLLOUTS}/{rid}/halt", headers=auth(tokens["operator"]))

    assert viewer.status_code == 403
    assert halted.status_code == 200 and halted.json()["state"] == "halted"
    assert again.status_code == 409
    assert resolved(client, tokens["viewer"], "cam-0")[0] == 1
    assert [e.actor for e in registry.store.list_audit() if e.action == "rollout.halt"] == ["operator-1"]


# --- the CLI, against the app served on 127.0.0.1 ----------------------------------------------------
def test_the_cli_starts_reads_and_halts_a_rollout(api) -> None:  # type: ignore[no-untyped-def]
    import json
    import socket
    import threading
    import time

    import uvicorn
    from typer.testing import CliRunner

    from fedge.cli.main import app as cli

    client, tokens, _ = api
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(client.app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    runner = CliRunner()
    common = ["--url", url, "--token", tokens["operator"]]
    try:
        argv = ["registry", "rollout", "start", "digits", "production", "2", "--steps", "lab,1.0"]
        bad = runner.invoke(cli, [*argv, "--groups", "lab", *common])
        started = runner.invoke(cli, [*argv, "--groups", "lab=cam-0,cam-1", *common])
        rid = json.loads(started.stdout)["id"]
        status = runner.invoke(cli, ["registry", "rollout", "status", str(rid), *common])
        halted = runner.invoke(cli, ["registry", "rollout", "halt", str(rid), "--reason", "test", *common])
        again = runner.invoke(cli, ["registry", "rollout", "halt", str(rid), *common])
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()

    assert bad.exit_code != 0 and "NAME=DEVICE" in bad.output
    assert json.loads(status.stdout)["groups"] == {"lab": ["cam-0", "cam-1"]}
    assert json.loads(halted.stdout)["state"] == "halted"
    assert again.exit_code != 0 and "halted, not active" in again.output


# --- promotion gates ---------------------------------------------------------------------------------
def test_a_rollout_to_a_gated_alias_needs_the_gates_a_promotion_needs(gated_api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, registry = gated_api
    refused = start(client, tokens["operator"])
    assert refused.status_code == 409, refused.text
    assert "gate approvals failed: 0 of 1 approvals" in refused.json()["error"]["message"]
    unknown = start(client, tokens["operator"], alias="nightly")  # nothing to roll out from
    assert unknown.status_code == 404 and "nightly" in unknown.json()["error"]["message"]
    actions = [e.action for e in registry.store.list_audit()]
    assert "gate.refused" in actions and "rollout.start" not in actions

    approved = client.post(
        "/api/v1/registry/versions/digits:2/approvals", json={"alias": "production", "comment": "ok"},
        headers=auth(tokens["admin"]),
    )  # fmt: skip
    assert approved.status_code in (200, 201), approved.text
    started = start(client, tokens["operator"], steps=["1.0"])
    assert started.status_code == 201, started.text
    for device in FLEET:
        report(client, tokens[device], 1)
        report(client, tokens[device], 2, requests=10, errors=0, error_rate=0.0, p99_ms=3.0)
    status = client.get(f"{ROLLOUTS}/{started.json()['id']}", headers=auth(tokens["viewer"])).json()
    assert status["state"] == "complete", status
    assert registry.store.get_alias("digits", "production").number == 2


def test_a_gate_that_no_longer_holds_at_completion_halts_instead_of_moving_the_alias(
    tmp_path: Path,
) -> None:
    """The coordinator restarted with a stricter gate mid-rollout: the last step does not promote."""
    from coordinator.device_reports import DeviceReportStore
    from coordinator.rollouts import RolloutService, RolloutStore
    from registry import open_registry

    config = RegistryConfig(root=str(tmp_path / "reg"), gates=GatesConfig(aliases={}))
    registry = open_registry(config)
    for content in (b"one", b"two"):
        registry.register_version(
            ModelVersionCreate("digits", None, None, (registry.put_artifact("onnx", content),), {}, {}, {}),
            aliases=("production",) if content == b"one" else (),
        )
    from registry import open_engine

    engine = open_engine(config.resolved_database_url())
    store, reports = RolloutStore(engine), DeviceReportStore(engine)
    lenient = RolloutService(store, registry, reports, gates=GatesConfig(aliases={}))
    rollout = lenient.start(
        model="digits", alias="production", version="2", steps=["1.0"], groups={}, min_healthy_s=0,
        max_error_rate=0.1, max_p99_ms=1000, actor="ops",
    )  # fmt: skip
    strict = RolloutService(
        store, registry, reports, gates=GatesConfig(aliases={"production": AliasGate(required_approvals=2)})
    )
    for version in (1, 2):
        reports.add(
            device="cam-0", model_name="digits", model_version=str(version), served=1,
            health={"status": "ok", "last_result": "unchanged"}, drift={}, reported_by="cam-0",
        )  # fmt: skip
    judged = strict.check(rollout, force=True)
    assert judged.state == "halted", judged
    assert (
        judged.reason.startswith("not promoted on completion: promotion refused")
        and "0 of 2" in judged.reason
    )
    assert registry.store.get_alias("digits", "production").number == 1
