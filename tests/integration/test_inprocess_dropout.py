"""A real deployment whose in-process agent (the default, `fedge client start --node in-process`) is
SIGKILLed holding a round's train message: the round closes without it once the SuperLink reports
its node unavailable, the lineage says so, and the agent restarted with the same key answers the
next round (coordinator, 3 agents, TLS, node authentication, 127.0.0.1)."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from client.fleet_node import HEARTBEAT_INTERVAL_S
from simulations.local_deployment import LocalDeployment
from tests.processes import processes_under

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SITES = ["site-a", "site-b", "site-c"]
# Longer than the SuperLink takes to see a dead node offline (two heartbeat intervals after its last
# heartbeat, at most 20 s after the kill), so what closes round 2 is that report, not the deadline
# (the default deadline, 600 s, is longer still).
DEADLINE_S = 30
OFFLINE_AFTER_S = 2 * HEARTBEAT_INTERVAL_S
RECEIVED = "train message received"
SENT = "train reply sent"


def _wait_log(dep: LocalDeployment, run_id: str, pattern: str, timeout: float) -> tuple[float, str]:
    """When the run's log first matched ``pattern`` (polled every 0.1 s), and the log."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = dep.api("GET", f"/runs/{run_id}/logs", role="viewer").json()["text"]
        if re.search(pattern, text):
            return time.monotonic(), text
        time.sleep(0.1)
    raise AssertionError(f"the run's log did not show {pattern!r} within {timeout:.0f} s:\n{text[-3000:]}")


def test_an_inprocess_agent_killed_holding_the_train_message_is_dropped_and_rejoins_with_its_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("inprocess-dropout")
    with LocalDeployment(root) as dep:
        for i, name in enumerate(SITES):
            key, data = dep.institution(name, partition=i, parts=3)
            assert dep.enroll(name).status_code == 201
            dep.start_agent(name, key, data)  # the default node mode: in-process
        dep.wait_online(SITES)
        overrides = [
            # 60 epochs: training lasts about 0.7 s from round 2 on, the window to kill site-c in.
            "task.local_epochs=60",
            "drift.enabled=false",
            "strategy.num_rounds=3",
            "strategy.min_train_nodes=2",
            "strategy.min_evaluate_nodes=2",
            # Every phase waits for all three connected: round 3 is asked of the restarted site-c.
            "strategy.min_available_nodes=3",
            "strategy.wait_for_nodes_s=60",
            f"strategy.round_timeout_s={DEADLINE_S}",
        ]
        created = dep.api("POST", "/runs", role="operator", json={"overrides": overrides, "reason": "kill"})
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]

        victim = dep.agents["site-c"]
        assert victim.process.pid is not None
        # The in-process node logs a message it pulled before its ClientApp trains on it: the second
        # train message is round 2's, and site-c is killed while training on it.
        deadline = time.monotonic() + 120
        while victim.output().count(RECEIVED) < 2:
            assert time.monotonic() < deadline, f"no round 2 train message:\n{victim.output()[-2000:]}"
            time.sleep(0.01)
        os.kill(victim.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert victim.wait(timeout=30) == -signal.SIGKILL
        assert victim.output().count(SENT) == 1, f"site-c answered round 2 first:\n{victim.output()[-2000:]}"
        node_id = re.findall(r"connected to the SuperLink at \S+ \(node (\d+)\)", victim.output())[-1]
        log_size = len(victim.output())

        dep.start_agent("site-c", victim.key, victim.data)  # restarted at once with the same key
        closed, text = _wait_log(
            dep, run_id, r"round 2: node \d+ \(site-c\) dropped", timeout=DEADLINE_S + 30
        )
        # No reply and no heartbeat: the SuperLink sees the node offline two heartbeat intervals
        # after its last heartbeat (sent at most 0.7 interval before the kill) and answers its
        # message with an unavailability error, which closes the round before its deadline.
        took = closed - killed
        assert OFFLINE_AFTER_S - HEARTBEAT_INTERVAL_S < took < DEADLINE_S, (took, text[-3000:])
        print(f"\nsite-c killed holding round 2's train message; round 2 closed {took:.1f} s later")

        run = dep.wait_run(run_id, timeout=180)
        assert run["status"] == "completed", run.get("error")
        first, second, third = run["rounds"]
        assert {a["name"] for a in first["answered"]} == set(SITES) and first["dropped"] == []
        assert {a["name"] for a in second["asked"]} == set(SITES)
        assert {a["name"] for a in second["answered"]} == {"site-a", "site-b"}
        (dropped,) = second["dropped"]
        assert (dropped["name"], str(dropped["node_id"]), dropped["reason"]) == (
            "site-c",
            node_id,
            "unavailable",
        )
        assert dropped["detail"].startswith(
            "the SuperLink reported the node unavailable (Error: Node Unavailable"
        )
        assert second["metrics"]["participants"] == 2.0
        # The restarted agent took its node id back and answered round 3.
        restarted = dep.agents["site-c"].output()[log_size:]
        assert f"(node {node_id})" in restarted and SENT in restarted, restarted[-2000:]
        assert {a["name"] for a in third["answered"]} == set(SITES) and third["dropped"] == []
        assert {str(p["node_id"]) for p in third["participants"] if p["name"] == "site-c"} == {node_id}
    assert processes_under(root) == [], "processes outlived the deployment"
