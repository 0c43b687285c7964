"""A staged rollout across 6 real ``fedge edge run`` devices and a real coordinator, all on 127.0.0.1.

2 devices first (a 0.33 fraction of the stable hash), then all; then a release whose reference rows
no runtime reproduces (its post-activation check fails) is rolled out to a named canary group: the
canaries refuse it, the coordinator halts the rollout by itself and the cohort resolves to the
previous version, while every device keeps serving. Bounded load runs against every device
throughout: no request may fail. The timeline of each step is printed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.auth import TokenStore
from coordinator.rollouts import cohort_point
from fedge.crypto import generate_private_key, save_public_key
from registry import RegistryConfig, open_registry
from tests.edge.test_agent import NAME, Coordinator, build_models
from tests.integration.test_edge_e2e import edge_command, free_port, wait_for
from tests.processes import interrupt_and_wait

pytestmark = pytest.mark.slow

COORDINATOR = (
    "import sys, uvicorn\n"
    "from coordinator.api import CoordinatorSettings, create_app\n"
    "from coordinator.telemetry_limits import TelemetryLimits\n"
    "from fedge.config.schemas import AliasGate, GatesConfig\n"
    "from registry import RegistryConfig\n"
    "gates = GatesConfig(aliases={'production': AliasGate(required_approvals=1)})\n"
    "settings = CoordinatorSettings(registry=RegistryConfig(root=sys.argv[1], gates=gates),\n"
    "                               telemetry=TelemetryLimits(rate_per_minute=6000, burst=1000))\n"
    "uvicorn.run(create_app(settings), host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')\n"
)
ALIAS = "production"
STEP_TIMEOUT_S = 40


def fleet_names() -> tuple[list[str], list[str]]:
    """Six device names of which exactly two fall below 0.33 on the rollout hash (the first cohort)."""
    canaries, rest = [], []
    for i in range(1000):
        name = f"edge-{i}"
        (canaries if cohort_point(NAME, ALIAS, name) < 0.33 else rest).append(name)
        if len(canaries) >= 2 and len(rest) >= 4:
            return canaries[:2], rest[:4]
    raise AssertionError("no split found")


@dataclass
class Load:
    """One thread sending requests to every device in turn, a little pause between rounds."""

    ports: dict[str, int]
    rows: list[list[float]]
    served: list[tuple[float, str, int, str]] = field(default_factory=list)  # (t, device, status, version)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                for device, port in self.ports.items():
                    try:
                        r = client.post(f"http://127.0.0.1:{port}/v1/predict", json={"rows": self.rows})
                        version = r.json().get("version", "") if r.status_code == 200 else ""
                        self.served.append((time.monotonic(), device, r.status_code, version))
                    except httpx.HTTPError as exc:
                        self.served.append((time.monotonic(), device, 0, repr(exc)))
                self.stop.wait(0.02)

    def between(self, start: float, end: float) -> list[tuple[float, str, int, str]]:
        return [s for s in list(self.served) if start <= s[0] < end]

    def latest(self, device: str) -> str:
        return next(
            (v for _, d, status, v in reversed(list(self.served)) if d == device and status == 200), ""
        )


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[Coordinator, str]]:
    config = RegistryConfig(root=str(tmp_path / "reg"))
    registry = open_registry(config)
    tokens = TokenStore.from_url(config.resolved_database_url())
    _, viewer = tokens.create(name="dashboard", role="viewer")
    _, operator = tokens.create(name="release-manager", role="operator")
    tokens.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, config.root, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "coordinator.log", "wb"),  # noqa: SIM115
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        yield Coordinator(
            f"http://127.0.0.1:{port}", viewer, registry, generate_private_key(), build_models(),
            config.resolved_database_url(),
        ), operator  # fmt: skip
    finally:
        interrupt_and_wait(proc)
        registry.close()


def test_staged_rollout_widens_then_a_failing_step_halts_and_rolls_back_only_the_canaries(
    coordinator: tuple[Coordinator, str], tmp_path: Path
) -> None:
    coord, operator = coordinator
    viewer = {"Authorization": f"Bearer {coord.token}"}
    ops = {"Authorization": f"Bearer {operator}"}
    v1 = coord.release(0)  # production
    v2 = coord.release(1, alias="candidate")
    key_path = save_public_key(coord.key.public_key(), tmp_path / "release.pub.pem")
    canaries, rest = fleet_names()
    fleet = canaries + rest
    ports = {device: free_port() for device in fleet}
    edges: dict[str, subprocess.Popen[bytes]] = {}
    for device in fleet:
        edges[device] = subprocess.Popen(
            [
                *edge_command(), "run", "--registry", coord.url, "--name", NAME, "--alias", ALIAS,
                "--public-key", str(key_path), "--dir", str(tmp_path / device), "--port", str(ports[device]),
                "--poll-interval", "0.3", "--report-interval", "0.5", "--device-name", device,
                "--drift-epsilon", "0",
            ],
            env={"PATH": str(Path(sys.executable).parent), "FEDGE_TOKEN": coord.device_token(device),
                 "PYTHONUNBUFFERED": "1", **_pythonpath()},
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"{device}.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
    load = Load(ports, coord.models.rows[:2].tolist())
    loader = threading.Thread(target=load.run, daemon=True)
    timeline: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def mark(event: str) -> float:
        now = time.monotonic()
        timeline.append((now - t0, event))
        return now

    def logs() -> str:
        return "\n".join(f"--- {d}\n{(tmp_path / f'{d}.log').read_text()[-1500:]}" for d in fleet)

    def wait_until(what: str, check: Any) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, f"{what} not within {STEP_TIMEOUT_S}s\n{logs()}"
            time.sleep(0.1)

    def rollout(rid: int) -> dict[str, Any]:
        return httpx.get(f"{coord.url}/api/v1/rollouts/{rid}", headers=viewer).json()

    def approve(number: int) -> None:  # production is gated: a rollout needs what a promotion needs
        r = httpx.post(f"{coord.url}/api/v1/registry/versions/{NAME}:{number}/approvals", headers=ops,
                       json={"alias": ALIAS, "comment": "staged rollout"})  # fmt: skip
        assert r.status_code == 201, r.text

    try:
        for device in fleet:
            wait_for(f"http://127.0.0.1:{ports[device]}/healthz", timeout=STEP_TIMEOUT_S)
        loader.start()
        wait_until(
            "every device serving and reporting v1",
            lambda: (
                all(load.latest(d) == label(v1) for d in fleet)
                and {
                    r["device"] for r in httpx.get(f"{coord.url}/api/v1/edge/devices", headers=viewer).json()
                }
                == set(fleet)
            ),
        )
        start_a = mark(
            f"rollout A: {label(v1)} -> {label(v2)}, steps 0.33,1.0 (canaries {', '.join(canaries)})"
        )
        approve(v2.number)
        created = httpx.post(f"{coord.url}/api/v1/rollouts", headers=ops, json={
            "model": NAME, "alias": ALIAS, "version": str(v2.number), "steps": ["0.33", "1.0"],
            "min_healthy_s": 1.0, "max_error_rate": 0.01, "max_p99_ms": 2000,
        })  # fmt: skip
        assert created.status_code == 201, created.text
        a = created.json()["id"]
        wait_until("the canaries serving v2", lambda: all(load.latest(d) == label(v2) for d in canaries))
        mark("canaries serve v2")
        wait_until("rollout A widening", lambda: rollout(a)["step"] == 1)
        widen_a = mark("rollout A widened to 1.0")
        wait_until("rollout A completing", lambda: rollout(a)["state"] == "complete")
        wait_until("every device serving v2", lambda: all(load.latest(d) == label(v2) for d in fleet))
        done_a = mark("rollout A complete: alias moved, all serve v2")

        step_one = load.between(start_a, widen_a)
        assert {v for _, d, s, v in step_one if d in rest and s == 200} == {label(v1)}  # the rest stayed
        for device in fleet:  # once a device served v2 it never went back to v1
            versions = [v for _, d, s, v in load.between(start_a, done_a) if d == device and s == 200]
            assert label(v1) not in versions[versions.index(label(v2)) :], device
        assert coord.registry.store.get_alias(NAME, ALIAS).number == v2.number

        v3 = coord.release(0, alias="candidate", spoil_expected=True)
        start_b = mark(f"rollout B: {label(v2)} -> {label(v3)} (spoiled), steps canary,1.0")
        approve(v3.number)
        created = httpx.post(f"{coord.url}/api/v1/rollouts", headers=ops, json={
            "model": NAME, "alias": ALIAS, "version": str(v3.number), "steps": ["canary", "1.0"],
            "groups": {"canary": canaries}, "min_healthy_s": 1.0,
        })  # fmt: skip
        assert created.status_code == 201, created.text
        b = created.json()["id"]
        halted = wait_until("rollout B halting", lambda: (r := rollout(b))["state"] == "halted" and r)
        end_b = mark(f"rollout B halted by the coordinator: {halted['reason']}")
        time.sleep(1.0)  # the fleet keeps serving after the halt
        end = mark("fleet still serving")

        v4 = coord.release(0, alias="candidate")
        start_c = mark(f"rollout C: {label(v2)} -> {label(v4)}, steps canary,1.0, halted by an operator")
        approve(v4.number)
        created = httpx.post(f"{coord.url}/api/v1/rollouts", headers=ops, json={
            "model": NAME, "alias": ALIAS, "version": str(v4.number), "steps": ["canary", "1.0"],
            "groups": {"canary": canaries}, "min_healthy_s": 3600,
        })  # fmt: skip
        c = created.json()["id"]
        wait_until("the canaries serving v4", lambda: all(load.latest(d) == label(v4) for d in canaries))
        mark("canaries serve v4")
        halt = httpx.post(f"{coord.url}/api/v1/rollouts/{c}/halt", headers=ops, json={"reason": "by hand"})
        assert halt.status_code == 200 and halt.json()["state"] == "halted"
        halt_c = mark("rollout C halted by an operator")
        wait_until("the canaries back on v2", lambda: all(load.latest(d) == label(v2) for d in canaries))
        end_c = mark("canaries back on v2")
    finally:
        load.stop.set()
        if loader.is_alive():
            loader.join(timeout=15)
        codes = {d: interrupt_and_wait(p) for d, p in edges.items()}

    print("\nrollout timeline (s since the devices were started):")
    for at, event in timeline:
        print(f"  {at:7.2f}  {event}")
    failed = [s for s in load.served if s[2] != 200]
    print(f"  requests: {len(load.served)}, failed: {len(failed)}")

    assert failed == [], failed[:5]
    assert all(code == 0 for code in codes.values()), (codes, logs())
    for start, stop in ((start_a, widen_a), (widen_a, done_a), (start_b, end_b), (end_b, end)):
        assert load.between(start, stop), "a step ran without load"
    assert halted["reason"].split()[0] in canaries and label(v3) in halted["reason"]
    # The canaries refused v3 and kept v2; the rest never got it; the cohort resolves to v2 again.
    assert {v for _, _, s, v in load.between(start_b, end)} == {label(v2)}
    for device in fleet:
        r = httpx.get(
            f"{coord.url}/api/v1/registry/aliases/{NAME}/{ALIAS}", params={"device": device}, headers=viewer
        )
        assert r.json()["number"] == v2.number
    assert coord.registry.store.get_alias(NAME, ALIAS).number == v2.number
    # Rollout C: only the canaries moved to v4, and only they came back.
    during_c = load.between(start_c, end_c)
    assert {v for _, d, s, v in during_c if d in rest} == {label(v2)}
    assert {v for _, d, s, v in during_c if d in canaries} == {label(v2), label(v4)}
    assert load.between(halt_c, end_c)
    reports = {r["device"]: r for r in httpx.get(f"{coord.url}/api/v1/edge/devices", headers=viewer).json()}
    assert all(reports[d]["health"]["rollout"]["cohort"] == "canary" for d in canaries)
    assert all(reports[d]["health"]["rollout"]["cohort"] == "rest" for d in rest)
    actions = [(e.action, e.details.get("rollout")) for e in coord.registry.store.list_audit()
               if e.action.startswith("rollout.")]  # fmt: skip
    assert actions == [
        ("rollout.start", a),
        ("rollout.widen", a),
        ("rollout.complete", a),
        ("rollout.start", b),
        ("rollout.halt", b),
        ("rollout.start", c),
        ("rollout.halt", c),
    ]


def label(version: Any) -> str:
    return f"{version.name}:{version.number}"


def _pythonpath() -> dict[str, str]:
    import os

    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
