"""A real deployment that loses processes: an agent SIGKILLed mid-round, the coordinator SIGKILLed
mid-run and restarted, the run resumed with `fedge runs resume` (coordinator, agents, TLS, 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from registry import RunStatus, open_registry
from simulations.local_deployment import LocalDeployment
from tests.processes import processes_under

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SITES = ["site-a", "site-b", "site-c"]
# Small and quick: one local epoch, no drift reference, short deadlines.
BASE = [
    "task.local_epochs=1",
    "drift.enabled=false",
    "strategy.min_available_nodes=2",
    "strategy.min_evaluate_nodes=2",
    "strategy.wait_for_nodes_s=120",
]


@pytest.fixture  # one federation per test: the crash test must not inherit the stalled agent's aftermath
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    root = tmp_path_factory.mktemp("recovery")
    with LocalDeployment(root) as dep:
        for i, name in enumerate(SITES):
            key, data = dep.institution(name, partition=i, parts=3)
            assert dep.enroll(name).status_code == 201
            # Flower's SuperNode (--node supernode): the node mode these recovery paths were built and
            # measured with; an in-process node stops with its agent (SIGSTOP below would take its
            # heartbeats too) and its rejoin after a restart is covered in tests/client.
            dep.start_agent(name, key, data, node_mode="supernode")
        dep.wait_online(SITES)
        yield dep
    assert processes_under(root) == [], "processes outlived the deployment"


def _wait_rounds(dep: LocalDeployment, run_id: str, rounds: int, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = dep.api("GET", f"/runs/{run_id}", role="viewer").json()
        if run["rounds_done"] >= rounds or run["status"] in RunStatus.FINISHED:
            return dict(run)
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not reach round {rounds}:\n{dep.coordinator_log()}")


def _restart_coordinator(dep: LocalDeployment) -> None:
    for http in dep._clients.values():
        http.close()
    dep._clients.clear()
    dep.coordinator = None
    dep.start_coordinator()


def _cli(dep: LocalDeployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**dep.env, "FEDGE_URL": dep.api_url, "FEDGE_TOKEN": dep.tokens["operator"],
           "FEDGE_CA": str(dep.tls_dir / "ca.crt")}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", *args], env=env, cwd=dep.root,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _wait_served(
    dep: LocalDeployment, name: str, line: str, count: int, run_id: str, timeout: float = 240.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dep.agents[name].output().count(line) >= count:
            return
        run = dep.api("GET", f"/runs/{run_id}", role="viewer").json()
        assert run["status"] not in RunStatus.FINISHED, run
        time.sleep(0.2)
    raise AssertionError(f"{name} did not serve {count} x {line!r}:\n{dep.agents[name].output()[-2000:]}")


def test_a_stalled_then_killed_agent_is_dropped_at_the_deadline_and_the_round_closes_without_it(
    federation: LocalDeployment,
) -> None:
    """site-c stalls holding round 2's train message (SIGSTOP: its node stays connected), the round
    closes at its deadline with the two others, its late reply is not read, then it is SIGKILLed
    mid-run and restarted."""
    dep = federation
    overrides = [*BASE, "strategy.num_rounds=2", "strategy.min_train_nodes=2", "strategy.round_timeout_s=45"]
    created = dep.api("POST", "/runs", role="operator", json={"overrides": overrides, "reason": "dropout"})
    assert created.status_code == 201, created.text
    run_id = created.json()["run_id"]
    # Right after it evaluated round 1: round 2's train message is the next one it gets.
    _wait_served(dep, "site-c", "evaluate message served", 1, run_id)
    victim = dep.agents["site-c"]
    assert victim.process.pid is not None
    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        _wait_rounds(dep, run_id, 2)  # closed at its deadline without site-c
    finally:
        os.kill(victim.process.pid, signal.SIGCONT)
    time.sleep(2)  # it may now answer round 2, too late: the round closed without it
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    dep.start_agent(
        "site-c", victim.key, victim.data, node_mode="supernode"
    )  # restarted; nobody does anything else
    run = dep.wait_run(run_id, timeout=300)
    assert run["status"] == "completed", run.get("error")
    first, second = run["rounds"]
    assert {a["name"] for a in first["answered"]} == set(SITES) and first["dropped"] == []
    assert {a["name"] for a in second["asked"]} == set(SITES)
    assert {a["name"] for a in second["answered"]} == {"site-a", "site-b"}
    assert [(d["name"], d["reason"]) for d in second["dropped"]] == [("site-c", "timeout")]
    assert {p["name"] for p in second["participants"]} == {"site-a", "site-b"}
    assert second["metrics"]["participants"] == 2.0


def test_a_coordinator_killed_mid_run_marks_it_interrupted_and_resume_completes_it(
    federation: LocalDeployment,
) -> None:
    dep = federation
    dep.wait_online(SITES)
    # FedAdam: its moments must survive the crash too (stored with each checkpoint, restored on resume).
    overrides = [
        *BASE, "strategy.name=fedadam", "strategy.num_rounds=3", "strategy.min_train_nodes=3",
        "strategy.round_timeout_s=60",
    ]  # fmt: skip
    created = dep.api("POST", "/runs", role="operator", json={"overrides": overrides, "reason": "crash"})
    assert created.status_code == 201, created.text
    run_id = created.json()["run_id"]
    before = _wait_rounds(dep, run_id, 1)
    assert before["status"] == "running", (
        before.get("error"),
        {n: dep.agents[n].output()[-2500:] for n in SITES},
    )
    assert dep.coordinator is not None and dep.coordinator.pid is not None
    os.kill(dep.coordinator.pid, signal.SIGKILL)
    dep.coordinator.wait(timeout=30)

    _restart_coordinator(dep)
    interrupted = dep.api("GET", f"/runs/{run_id}", role="viewer").json()
    assert interrupted["status"] == "interrupted", interrupted
    done_before = interrupted["rounds_done"]
    assert 1 <= done_before < 3
    dep.wait_online(SITES)

    resumed = _cli(dep, "runs", "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    new_id = resumed.stdout.strip()
    run = dep.wait_run(new_id, timeout=300)
    assert run["status"] == "completed", run.get("error")
    assert [r["round"] for r in run["rounds"]] == list(range(done_before + 1, 4))
    for r in run["rounds"]:  # every agent answers after the coordinator's restart, site-c included
        assert {a["name"] for a in r["answered"]} == set(SITES), r

    again = _cli(dep, "runs", "resume", run_id)
    assert again.returncode != 0 and f"already resumed as run {new_id}" in again.stderr, again.stderr
    registry = open_registry(dep.registry_config)
    try:
        old = registry.store.get_run(run_id)
        assert old.status == "resumed"
        old_ids = [c.id for c in registry.store.list_checkpoints(run_id)]
        new_checkpoints = registry.store.list_checkpoints(new_id)
        assert new_checkpoints[0].lineage["parent_checkpoint_id"] == old_ids[-1]
        assert new_checkpoints[0].lineage["resumed_from"]["run_id"] == run_id
        # The optimiser continued: the interrupted run's last checkpoint stored FedAdam's moments,
        # and the resumed run loaded them.
        last_old = registry.store.get_checkpoint(old_ids[-1])
        assert last_old.lineage["strategy_state"]["kind"] == "strategy_state"
        assert new_checkpoints[0].lineage["resumed_from"]["strategy_state"] == ["m_t", "v_t"]
        # Nothing lost or duplicated: one version for the two runs, its lineage chains every round.
        assert registry.store.list_versions(run_id=run_id, limit=10) == []
        (version,) = registry.store.list_versions(run_id=new_id, limit=10)
        chain = version.lineage["checkpoint_ids"]
        assert chain == old_ids + [c.id for c in new_checkpoints]
        assert [registry.store.get_checkpoint(i).round for i in chain] == [1, 2, 3]
        assert registry.store.get_run(new_id).config["strategy"] == old.config["strategy"]
    finally:
        registry.close()
    verify = _cli(dep, "audit", "verify", "--root", str(dep.registry_root))
    assert verify.returncode == 0, verify.stdout + verify.stderr
