"""The client agent's warm handler: task check, train reply with identity, drift under its own budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from client.agent import AgentConfig, ClientAgent
from client.drift_telemetry import EDGES_KEY, META_KEY, MODE_WINDOW, QUERY_KEY
from fedge.drift import fixed_bin_edges
from fedge.errors import ConfigError
from fedge.protocol import ARRAYS_KEY, CLIENT_INFO_KEY, INFO_FINGERPRINT, INFO_NAME, encode_run_config
from fedge.serde import state_dict_to_arrays
from fedge.tasks import TaskConfig, get_task
from simulations.local_deployment import partition_file


@pytest.fixture
def agent(tmp_path: Path) -> ClientAgent:
    task = TaskConfig(name="digits", local_epochs=1)
    data = partition_file(tmp_path / "site.csv", task, 0, 4)
    for name in ("ca.crt", "node.key"):
        (tmp_path / name).write_text("placeholder: the SuperNode is not started here")
    agent = ClientAgent(
        AgentConfig(
            superlink="127.0.0.1:1",
            ca_cert=tmp_path / "ca.crt",
            private_key=tmp_path / "node.key",
            data_path=data,
            task=task,
            state_dir=tmp_path / "state",
            name="hospital-a",
            drift_budget_epsilon=1.5,
            drift_min_window=50,
        )
    )
    agent.load_data()
    return agent


def _run_config(**drift: object) -> str:
    task = TaskConfig(name="digits", local_epochs=1)
    return encode_run_config(
        {"task": {**task.__dict__, "data": task.data.__dict__}, "drift": {"budget_epsilon": 1e9, **drift}}
    )


def _drift_query(window: int) -> RecordDict:
    edges = fixed_bin_edges(np.zeros(64), np.full(64, 16.0), 5)
    return RecordDict(
        {
            QUERY_KEY: ConfigRecord({"mode": MODE_WINDOW, "window": window, "num_classes": 0}),
            EDGES_KEY: ArrayRecord({"edges": Array(edges)}),
        }
    )


def test_train_reply_carries_weights_metrics_and_the_identity_of_the_data(agent: ClientAgent) -> None:
    model = get_task("digits").build_model(TaskConfig(name="digits"))
    content = RecordDict({ARRAYS_KEY: state_dict_to_arrays(model.state_dict())})

    reply = agent.handle("train", _run_config(), content)

    info = reply[CLIENT_INFO_KEY]
    assert info[INFO_NAME] == "hospital-a"
    assert info[INFO_FINGERPRINT] == agent.identity.fingerprint and len(str(info[INFO_FINGERPRINT])) == 64
    assert ARRAYS_KEY in reply and agent.messages_served == 1


def test_a_run_for_another_task_is_refused(agent: ClientAgent) -> None:
    config = encode_run_config({"task": {"name": "breast_cancer"}})
    with pytest.raises(ConfigError, match="holds 'digits' data; the run asks for task 'breast_cancer'"):
        agent.handle("train", config, RecordDict())


def test_drift_queries_spend_the_institutions_budget_not_the_runs(agent: ClientAgent) -> None:
    config = _run_config(epsilon=1.0, min_window=1)

    first = agent.handle("query.drift", config, _drift_query(0))
    second = agent.handle("query.drift", config, _drift_query(1))

    assert first[META_KEY]["status"] == "ok"
    assert second[META_KEY]["status"] == "refused", "the agent's 1.5 budget wins over the run's 1e9"
    assert "budget" in str(second[META_KEY]["reason"])
    assert (agent.state_dir / "privacy-ledger.json").exists()


def test_the_institutions_minimum_window_wins_over_a_smaller_one_in_the_run(tmp_path: Path) -> None:
    task = TaskConfig(name="digits")
    data = partition_file(tmp_path / "site.csv", task, 0, 4)
    for name in ("ca.crt", "node.key"):
        (tmp_path / name).write_text("x")
    agent = ClientAgent(
        AgentConfig("127.0.0.1:1", tmp_path / "ca.crt", tmp_path / "node.key", data, task,
                    tmp_path / "state", "site", drift_min_window=100_000)
    )  # fmt: skip
    agent.load_data()

    reply = agent.handle("query.drift", _run_config(epsilon=1.0, min_window=1), _drift_query(0))

    assert reply[META_KEY]["status"] == "below-min-window"


def test_a_replaced_data_file_is_validated_again_and_served(agent: ClientAgent) -> None:
    import os

    from fedge.errors import DataError

    before = agent.identity.fingerprint
    path = agent.config.data_path
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-5]) + "\n")  # the institution's newest file: 5 rows fewer
    os.utime(path, ns=(1, 1))

    reply = agent.handle("query.drift", _run_config(epsilon=0.1, min_window=1), _drift_query(0))

    assert reply[META_KEY]["status"] == "ok"
    assert agent.identity.fingerprint != before and agent.identity.num_rows == len(lines) - 6
    cells = lines[3].split(",")
    cells[4] = "abc"
    path.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
    os.utime(path, ns=(2, 2))
    with pytest.raises(DataError, match=r"row 3.*'abc' is not a number"):
        agent.handle("query.drift", _run_config(epsilon=0.1, min_window=1), _drift_query(1))
