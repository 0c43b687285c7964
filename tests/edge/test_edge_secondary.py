"""A canary (A/B split) or shadow version beside the followed one, the serving window a device
reports, and the rollout cohort it reads: a real agent against a real coordinator on 127.0.0.1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import tests.edge.test_agent as agent_tests
from edge.agent import EdgeAgent
from edge.follower import rollout_header
from edge.health import ServingWindow
from edge.metrics import ServingMetrics
from fedge.errors import ConfigError, FedgeError
from tests.edge.test_agent import NAME, Coordinator
from tests.integration.test_edge_e2e import edge_command

# The agent tests' fixtures: a coordinator on 127.0.0.1 with two tiny models, an agent serving one.
models, coordinator, serving = agent_tests.models, agent_tests.coordinator, agent_tests.serving


def test_a_shadow_version_runs_on_every_request_and_answers_none(
    serving: tuple[EdgeAgent, object], coordinator: Coordinator
) -> None:
    agent, _ = serving
    v2 = coordinator.release(1, alias="candidate")
    label = agent.attach_secondary(v2.number, mode="shadow")

    out, runtime = agent.slot.predict(coordinator.models.rows)

    assert label == f"{NAME}:{v2.number}" and runtime is agent.slot.current()
    info = agent.slot.secondary_info()
    assert info is not None and info["mode"] == "shadow" and info["shadow"]["rows"] == len(out)


def test_a_canary_with_weight_one_answers_every_request(
    serving: tuple[EdgeAgent, object], coordinator: Coordinator
) -> None:
    agent, _ = serving
    v2 = coordinator.release(1, alias="candidate")
    agent.attach_secondary(v2.number, mode="split", weight=1.0)

    answered = {agent.slot.predict(coordinator.models.rows[:1])[1].version_label for _ in range(5)}

    assert answered == {f"{NAME}:{v2.number}"}
    with pytest.raises(ConfigError, match="outside"):
        agent.attach_secondary(v2.number, mode="split", weight=1.5)


def test_a_canary_that_fails_its_reference_rows_is_refused(
    serving: tuple[EdgeAgent, object], coordinator: Coordinator
) -> None:
    agent, _ = serving
    spoiled = coordinator.release(1, alias="candidate", spoil_expected=True)
    with pytest.raises(FedgeError, match=f"{NAME}:{spoiled.number}"):
        agent.attach_secondary(spoiled.number, mode="split", weight=0.5)
    assert agent.slot.secondary_info() is None
    with pytest.raises(FedgeError):
        agent.attach_secondary(999, mode="shadow")


def test_the_cli_refuses_canary_and_shadow_together(tmp_path: Path) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text("unused")
    result = subprocess.run(
        [*edge_command(), "run", "--registry", "http://127.0.0.1:9", "--public-key", str(pem),
         "--canary", "2", "--shadow", "3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "--canary and --shadow" in result.stdout + result.stderr


def test_the_serving_window_counts_server_errors_and_p99_since_the_last_close() -> None:
    metrics = ServingMetrics()
    window = ServingWindow(metrics)
    for _ in range(198):
        metrics.record_request(status=200, version="m:1", seconds=0.0008)
    metrics.record_request(status=500, version="m:1", seconds=0.2)
    metrics.record_request(status=422, version="m:1")  # refused before the model: not timed, not an error

    first = window.close()
    second = window.close()
    for _ in range(10):
        metrics.record_request(status=200, version="m:2", seconds=0.2)
    third = window.close()

    # p99: the upper bound of the bucket the 99th percentile falls in (1 ms; 250 ms once slow)
    assert first == {"requests": 200, "errors": 1, "error_rate": 0.005, "p99_ms": 1.0}
    assert second == {"requests": 0, "errors": 0, "error_rate": None, "p99_ms": None}
    assert third == {"requests": 10, "errors": 0, "error_rate": 0.0, "p99_ms": 250.0}


def test_the_rollout_header_is_read_or_ignored() -> None:
    assert rollout_header("id=3; step=0; cohort=canary; state=active") == {
        "id": "3", "step": "0", "cohort": "canary", "state": "active"
    }  # fmt: skip
    assert rollout_header(None) is None and rollout_header("garbage") is None
    assert rollout_header("step=1") is None
