"""Deployment mode end to end: a coordinator and client agents as separate processes on 127.0.0.1.

TLS everywhere (the operator API and the SuperLink), SuperNode authentication with enrolled keys,
a run created through the operator API, data validated and fingerprinted at each institution.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client.agent import EXIT_REFUSED
from client.data_files import load_client_data, write_client_file
from fedge.tasks import Dataset, TaskConfig
from registry import open_registry
from simulations.local_deployment import LocalDeployment
from tests.processes import processes_under

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NODES = ["strategy.min_train_nodes=3", "strategy.min_evaluate_nodes=3", "strategy.min_available_nodes=3"]
# The drift reference fixed at release: 8 central pixels in 5 bins (about 480 rows per site).
DRIFT = [
    "drift.features=[19,20,27,28,35,36,43,44]",
    "drift.num_bins=5",
    "drift.fine_bins=20",
    "drift.epsilon=2.0",
    "drift.reference_epsilon=2.0",
    "drift.min_window=100",
]
RUN_OVERRIDES = ["strategy.num_rounds=2", *NODES, *DRIFT]


def _malformed_csv(good: Path, bad: Path) -> None:
    """The good file with one text cell in a numeric column (data row 7, column 3)."""
    with good.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[7][2] = "abc"
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    root = tmp_path_factory.mktemp("deployment")
    with LocalDeployment(root) as dep:
        yield dep
    assert processes_under(root) == [], "processes outlived the deployment"


@pytest.fixture(scope="module")
def completed_run(federation: LocalDeployment) -> dict:
    dep = federation
    keys = {}
    for i, (name, suffix) in enumerate(
        [("hospital-a", ".csv"), ("hospital-b", ".parquet"), ("hospital-c", ".npz")]
    ):
        keys[name] = dep.institution(name, partition=i, parts=3, suffix=suffix)
        assert dep.enroll(name).status_code == 201
    # Not enrolled: refused by the SuperLink.
    keys["intruder"] = dep.institution("intruder", partition=0, parts=3)
    # Enrolled, but its file is malformed: the agent refuses to start.
    key, good = dep.institution("hospital-bad", partition=1, parts=3)
    bad = good.with_name("broken.csv")
    _malformed_csv(good, bad)
    keys["hospital-bad"] = (key, bad)
    assert dep.enroll("hospital-bad").status_code == 201

    for name, (key, data) in keys.items():
        dep.start_agent(name, key, data)
    dep.wait_online(["hospital-a", "hospital-b", "hospital-c"])
    response = dep.api("POST", "/runs", role="operator", json={"overrides": RUN_OVERRIDES, "reason": "ci"})
    assert response.status_code == 201, response.text
    run = dep.wait_run(response.json()["run_id"])
    run["_keys"] = keys
    return run


def test_run_created_through_the_api_completes_with_lineage(
    federation: LocalDeployment, completed_run: dict
) -> None:
    run = completed_run
    assert run["status"] == "completed", run.get("error")
    assert run["mode"] == "deployment" and run["rounds_done"] == 2
    assert run["versions"], "the run registered no version"
    expected = {}
    task = TaskConfig(name="digits")
    for name in ("hospital-a", "hospital-b", "hospital-c"):
        data = load_client_data(
            run["_keys"][name][1], task, val_fraction=task.val_fraction, seed=task.data_seed
        )
        expected[name] = (data.fingerprint, data.num_rows, len(data.train))
    registry = open_registry(federation.registry_config)
    try:
        checkpoints = registry.store.list_checkpoints(run["run_id"])
        assert [c.round for c in checkpoints] == [1, 2]
        for checkpoint in checkpoints:
            nodes = {n["name"]: n for n in checkpoint.lineage["nodes"]}
            assert set(nodes) == set(expected)
            for name, (fingerprint, rows, train_rows) in expected.items():
                assert nodes[name]["data_fingerprint"] == fingerprint
                assert nodes[name]["data_rows"] == rows
                assert nodes[name]["num_examples"] == train_rows
    finally:
        registry.close()
    # The API shows the same per-round participants and metrics.
    assert {p["name"] for p in run["rounds"][0]["participants"]} == set(expected)
    assert "central-accuracy" in run["rounds"][-1]["metrics"]


def test_unenrolled_node_is_refused(federation: LocalDeployment, completed_run: dict) -> None:
    intruder = federation.agents["intruder"]
    assert intruder.wait(timeout=60) == EXIT_REFUSED, intruder.output()[-2000:]
    assert "refused this node's key" in intruder.output()


def test_malformed_csv_stops_the_agent_naming_file_column_and_row(
    federation: LocalDeployment, completed_run: dict
) -> None:
    agent = federation.agents["hospital-bad"]
    assert agent.wait(timeout=60) == 2
    out = agent.output()
    assert "broken.csv" in out and "row 7" in out and "'abc' is not a number" in out, out[-2000:]
    assert "column '" in out


def test_api_refuses_without_token_wrong_role_and_bad_config(
    federation: LocalDeployment, completed_run: dict
) -> None:
    dep = federation
    with dep.client(None) as anonymous:
        assert anonymous.get("/api/v1/runs").status_code == 401
    denied = dep.api("POST", "/runs", role="viewer", json={"overrides": []})
    assert denied.status_code == 403
    unknown = dep.api("POST", "/runs", role="operator", json={"overrides": ["strategy.nope=1"]})
    assert unknown.status_code == 422 and "strategy.nope" in unknown.json()["error"]["message"]
    wrong = dep.api("POST", "/runs", role="operator", json={"overrides": ["strategy.num_rounds=many"]})
    assert wrong.status_code == 422 and "strategy.num_rounds" in wrong.json()["error"]["message"]
    logs = dep.api("GET", f"/runs/{completed_run['run_id']}/logs", role="viewer").json()
    assert logs["text"] and logs["finished"]
    # fedge's own INFO lines reach the run's log from Flower's ServerApp process, not only warnings
    assert "INFO coordinator.round_recorder: round 1: checkpoint" in logs["text"], logs["text"][-2000:]
    with dep.client("viewer") as viewer:
        metrics = viewer.get("/metrics").text
    assert 'fedge_runs{status="completed"} 1.0' in metrics
    assert "fedge_nodes_online" in metrics


def test_drift_at_institutions_triggers_a_warm_started_retraining(
    federation: LocalDeployment, completed_run: dict
) -> None:
    """Release -> production -> two of three institutions' data shifts -> a monitor run's windows
    flag it -> the coordinator starts the retraining the policy requested, warm-started."""
    dep = federation
    version = completed_run["versions"][0]
    approved = dep.api(
        "POST", f"/registry/versions/{version}/approvals", role="operator", json={"alias": "production"}
    )
    assert approved.status_code == 201, approved.text
    moved = dep.api(
        "POST",
        "/registry/promotions",
        role="operator",
        json={"moves": [{"version": version, "alias": "production"}], "reason": "ci"},
    )
    assert moved.status_code == 200, moved.text
    task = TaskConfig(name="digits")
    for name in ("hospital-a", "hospital-b"):  # the institutions' newest files (the agents reload them)
        path = completed_run["_keys"][name][1]
        data = load_client_data(path, task, val_fraction=0.0, seed=0)
        shifted = Dataset(np.clip(data.train.x + 0.25, 0.0, 1.0), data.train.y)
        write_client_file(path, shifted, task, overwrite=True)

    monitor = dep.api(
        "POST",
        "/runs",
        role="operator",
        json={"overrides": ["mode=monitor", "drift.windows=2", *NODES, *DRIFT]},
    )
    assert monitor.status_code == 201, monitor.text
    assert dep.wait_run(monitor.json()["run_id"])["status"] == "completed"

    status = dep.api("GET", "/drift/status", role="viewer").json()
    assert status["versions"][0]["flagged"], status
    deadline = time.monotonic() + 60
    triggers: list = []
    while time.monotonic() < deadline:
        triggers = dep.api("GET", "/drift/triggers", role="viewer").json()
        if triggers and triggers[0]["outcome"] == "started":
            break
        time.sleep(1)
    assert triggers and triggers[0]["outcome"] == "started", triggers
    retrain = dep.wait_run(triggers[0]["run_id"])
    assert retrain["status"] == "completed", retrain.get("error")
    assert retrain["reason"].startswith("drift-policy: calibrated test")
    assert retrain["versions"] == ["digits:2"]
    registry = open_registry(federation.registry_config)
    try:
        run = registry.store.get_run(retrain["run_id"])
        assert run.config["warm_start_from"] == "digits@production" and run.mode == "deployment"
        assert [e.actor for e in registry.store.list_audit() if e.action == "drift.triggered"] == [
            "drift-policy"
        ]
    finally:
        registry.close()


def test_revoked_node_can_no_longer_connect(federation: LocalDeployment, completed_run: dict) -> None:
    dep = federation
    key, data = completed_run["_keys"]["hospital-c"]
    dep.stop_agent("hospital-c")
    assert dep.api("DELETE", "/nodes/hospital-c").status_code == 200
    states = {n["name"]: n["state"] for n in dep.api("GET", "/nodes", role="viewer").json()}
    assert states["hospital-c"] == "revoked"
    again = dep.start_agent("hospital-c", key, data)
    assert again.wait(timeout=90) == EXIT_REFUSED, again.output()[-2000:]
