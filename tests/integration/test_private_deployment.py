"""SecAgg+ and local DP through a real deployment: ``fedge coordinator serve --tls-dir`` and three
``fedge client start`` agents (in-process Flower nodes, TLS, node authentication, 127.0.0.1).

One federation serves both runs: site-c's institution gave itself a privacy budget too small for a
local-DP round, which a SecAgg+ run (no DP) never spends from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from registry import open_registry
from simulations.local_deployment import LocalDeployment
from tests.processes import processes_under

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SITES = ["site-a", "site-b", "site-c"]
BUDGETS = {"site-a": "10", "site-b": "10", "site-c": "0.5"}  # site-c cannot pay one round of 0.9
BASE = [
    "strategy.num_rounds=2",
    "task.local_epochs=1",
    "drift.enabled=false",
    "simulation.num_clients=3",
    "strategy.min_available_nodes=3",
    "strategy.wait_for_nodes_s=120",
    "strategy.round_timeout_s=120",
]
SECAGG = [
    *BASE,
    "strategy.secure_aggregation=true",
    "strategy.min_train_nodes=3",
    "strategy.min_evaluate_nodes=3",
    "privacy.secagg.num_shares=3",
    "privacy.secagg.reconstruction_threshold=2",
]
LOCAL_DP = [
    *BASE,
    "privacy=local",
    "privacy.target_epsilon=0.9",
    "privacy.clipping_norm=0.01",  # keeps the noised weights usable (sigma 0.054 per weight)
    "strategy.min_train_nodes=2",
    "strategy.min_evaluate_nodes=2",
]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    root = tmp_path_factory.mktemp("private-deployment")
    with LocalDeployment(root) as dep:
        for i, name in enumerate(SITES):
            key, data = dep.institution(name, partition=i, parts=3)
            assert dep.enroll(name).status_code == 201
            dep.start_agent(name, key, data, options=["--privacy-budget", BUDGETS[name]])
        dep.wait_online(SITES)
        yield dep
    assert processes_under(root) == [], "processes outlived the deployment"


def _run(dep: LocalDeployment, overrides: list[str], reason: str) -> dict[str, Any]:
    created = dep.api("POST", "/runs", role="operator", json={"overrides": overrides, "reason": reason})
    assert created.status_code == 201, created.text
    run = dep.wait_run(created.json()["run_id"], timeout=300)
    assert run["status"] == "completed", f"{run.get('error')}\n{dep.coordinator_log()}"
    return run


def _ledger(dep: LocalDeployment, name: str) -> list[dict[str, Any]]:
    path = dep.root / "institutions" / name / "state" / "privacy-ledger.json"
    return list(json.loads(path.read_text())["entries"]) if path.exists() else []


def _completed(
    dep: LocalDeployment, overrides: list[str], reason: str
) -> tuple[dict[str, Any], list[Any], Any]:
    """Run 2 rounds to completion: the run, its checkpoints (rounds 1 and 2) and its version."""
    run = _run(dep, overrides, reason)
    assert run["rounds_done"] == 2 and run["versions"], run
    registry = open_registry(dep.registry_config)
    try:
        checkpoints = registry.store.list_checkpoints(run["run_id"])
        name, number = run["versions"][0].split(":")
        version = registry.store.get_version_by_number(name, int(number))
    finally:
        registry.close()
    assert [c.round for c in checkpoints] == [1, 2]
    return run, checkpoints, version


def _numbers(value: Any) -> int:
    """How many numbers a JSON value holds (an update would be thousands)."""
    if isinstance(value, dict):
        return sum(_numbers(v) for v in value.values())
    if isinstance(value, list):
        return sum(_numbers(v) for v in value)
    return int(isinstance(value, int | float) and not isinstance(value, bool))


def test_secure_aggregation_run_completes_and_the_coordinator_keeps_no_individual_update(
    federation: LocalDeployment,
) -> None:
    dep = federation
    run, checkpoints, version = _completed(dep, SECAGG, "secagg")
    secagg = version.lineage["secure_aggregation"]
    assert secagg["protocol"] == "secagg+" and secagg["num_shares"] == 3
    assert secagg["reconstruction_threshold"] == 2
    accuracy = version.metrics["central-accuracy"]  # the unmasked mean, evaluated centrally
    assert math.isfinite(accuracy) and 0.0 < accuracy <= 1.0
    assert accuracy == checkpoints[-1].metrics["central-accuracy"]
    for checkpoint in checkpoints:
        # who took part (names, fingerprints, metrics) but no individual update: a handful of numbers
        # per node, never the model's thousands of weights
        nodes = checkpoint.lineage["nodes"]
        assert sorted(n["name"] for n in nodes) == SITES
        assert all(_numbers(n) < 50 for n in nodes), nodes
    run_log = dep.api("GET", f"/runs/{run['run_id']}/logs", role="viewer").json()["text"]
    # Flower's SecAgg+ workflow ran both rounds with all three nodes (no mask had to be reconstructed)
    assert run_log.count("Secure aggregation completed.") == 2, run_log[-3000:]
    assert run_log.count("aggregate_fit: received 3 results and 0 failures") == 2, run_log[-3000:]
    for name in SITES:
        log = dep.agents[name].output()
        # each agent ran the protocol's stages and sent only its masked vector, once per round
        assert log.count("stage 2 completed, uploading masked parameters") == 2, log[-2000:]
        assert _ledger(dep, name) == []  # no DP: nothing spent


def test_local_dp_run_is_paid_from_each_institutions_ledger_and_one_that_cannot_pay_refuses(
    federation: LocalDeployment,
) -> None:
    dep = federation
    run, checkpoints, version = _completed(dep, LOCAL_DP, "local-dp")
    for checkpoint in checkpoints:  # the round went on with the two that paid
        assert sorted(n["name"] for n in checkpoint.lineage["nodes"]) == ["site-a", "site-b"]
    privacy = version.lineage["privacy"]
    assert privacy["mechanism"] == "gaussian-local" and privacy["epsilon_per_round"] == 0.9
    assert [r["round"] for r in privacy["refusals"]] == [1, 2]
    assert "privacy budget exhausted: local-dp training" in privacy["refusals"][0]["reason"]
    assert "needs epsilon 0.9" in privacy["refusals"][0]["reason"]
    assert str(dep.root) not in json.dumps(privacy["refusals"])  # no server or site path in it
    for name in ("site-a", "site-b"):
        entries = _ledger(dep, name)
        assert [e["epsilon"] for e in entries] == [0.9, 0.9], entries
        assert [e["purpose"] for e in entries] == [
            f"local-dp training, run {run['run_id']} round {r}" for r in (1, 2)
        ]
        # Flower's LocalDpMod clipped and noised the update before it left, every round
        log = dep.agents[name].output()
        assert log.count("flwr: LocalDpMod: local DP noise with 0.0538 stddev added") == 2, log[-2000:]
    assert _ledger(dep, "site-c") == []  # refused before anything was spent or trained
    assert "LocalDpMod" not in dep.agents["site-c"].output()  # nor anything trained or noised
