"""A client's side of DP training: one ledger per institution pays local-DP rounds and telemetry alike
(refused beyond its budget, whatever the run asks), and the Flower mods noise or clip train replies only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.app.message.message import make_message

from client.agent import AgentConfig, ClientAgent
from client.drift_telemetry import META_KEY
from client.training_privacy import privacy_mod
from fedge.errors import PrivacyBudgetError
from fedge.protocol import ARRAYS_KEY, RUN_CONFIG_KEY, encode_run_config
from fedge.serde import state_dict_to_arrays
from fedge.tasks import TaskConfig, get_task
from simulations.local_deployment import partition_file
from tests.client.test_client_agent import _drift_query


def _run_config(privacy: dict[str, object], **drift: object) -> str:
    task = TaskConfig(name="digits", local_epochs=1)
    return encode_run_config(
        {
            "task": {**task.__dict__, "data": task.data.__dict__},
            "drift": {"budget_epsilon": 1e9, **drift},
            "simulation": {"num_clients": 3},
            "strategy": {"min_train_nodes": 2, "min_evaluate_nodes": 2, "min_available_nodes": 2},
            "privacy": privacy,
        }
    )


def _train_content(server_round: int) -> RecordDict:
    model = get_task("digits").build_model(TaskConfig(name="digits"))
    return RecordDict(
        {
            ARRAYS_KEY: state_dict_to_arrays(model.state_dict()),
            "config": ConfigRecord({"server-round": server_round, "lr": 0.1, "local-epochs": 1}),
        }
    )


@pytest.fixture
def agent(tmp_path: Path) -> ClientAgent:
    task = TaskConfig(name="digits", local_epochs=1)
    data = partition_file(tmp_path / "site.csv", task, 0, 4)
    for name in ("ca.crt", "node.key"):
        (tmp_path / name).write_text("placeholder: the SuperNode is not started here")
    agent = ClientAgent(
        AgentConfig(
            superlink="127.0.0.1:1", ca_cert=tmp_path / "ca.crt", private_key=tmp_path / "node.key",
            data_path=data, task=task, state_dir=tmp_path / "state", name="hospital-a",
            drift_budget_epsilon=100.0, privacy_budget_epsilon=2.5, drift_min_window=1,
        )
    )  # fmt: skip
    agent.load_data()
    return agent


LOCAL = {"mode": "local", "target_epsilon": 1.0, "delta": 1e-5, "clipping_norm": 1.0}


def test_telemetry_and_local_dp_training_spend_one_budget_and_the_excess_is_refused(
    agent: ClientAgent,
) -> None:
    config = _run_config(LOCAL, epsilon=1.0, min_window=1)

    drift = agent.handle("query.drift", config, _drift_query(0))
    trained = agent.handle("train", config, _train_content(1))
    refused = r"privacy budget exhausted: local-dp training, run \? round 2 needs epsilon 1 but 2 of 2.5"
    refused += " is spent"
    with pytest.raises(PrivacyBudgetError, match=refused + "; refusing to send"):
        agent.handle("train", config, _train_content(2))

    assert drift[META_KEY]["status"] == "ok" and ARRAYS_KEY in trained
    ledger = json.loads((agent.state_dir / "privacy-ledger.json").read_text())
    assert ledger["budget_epsilon"] == 2.5, "the institution's --privacy-budget, not the run's 1e9"
    purposes = [e["purpose"] for e in ledger["entries"]]
    assert len(purposes) == 2 and purposes[1] == "local-dp training, run ? round 1"


def test_training_without_local_dp_spends_nothing(agent: ClientAgent) -> None:
    agent.handle("train", _run_config({"mode": "none"}), _train_content(1))
    assert not (agent.state_dir / "privacy-ledger.json").exists()


def _message(kind: str, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}), "config": ConfigRecord(config)}
    )
    metadata = Metadata(
        run_id=1, message_id=f"m-{kind}", src_node_id=0, dst_node_id=1, reply_to_message_id="",
        group_id="1", created_at=0.0, ttl=3600.0, message_type=kind,
    )  # fmt: skip
    return make_message(metadata, content=content)


def _context(privacy: dict[str, object]) -> Context:
    return Context(
        run_id=1, node_id=1, node_config={}, state=RecordDict(),
        run_config={RUN_CONFIG_KEY: _run_config(privacy)},
    )  # fmt: skip


def _call_next(update: np.ndarray) -> Callable[[Message, Context], Message]:
    def handler(msg: Message, context: Context) -> Message:
        return make_message(msg.metadata, content=RecordDict({"arrays": ArrayRecord({"w": Array(update)})}))

    return handler


def test_local_dp_clips_and_noises_train_replies_only() -> None:
    start, update = np.zeros(1000, np.float32), np.full(1000, 0.5, np.float32)  # norm 15.8 > clip 1

    train = privacy_mod(_message("train", {"w": start}, {}), _context(LOCAL), _call_next(update))
    evaluate = privacy_mod(_message("evaluate", {"w": start}, {}), _context(LOCAL), _call_next(update))

    sent = train.content.array_records["arrays"]["w"].numpy()
    # clipped to norm 1 (0.0316 per entry), then noised with sigma = sqrt(2 ln(1.25/1e-5)) / 1 = 4.84
    assert not np.allclose(sent, update) and 4.0 < float(np.std(sent)) < 5.7
    np.testing.assert_array_equal(evaluate.content.array_records["arrays"]["w"].numpy(), update)


def test_client_side_clipping_for_central_dp_bounds_the_update() -> None:
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    central = {"mode": "central", "clipping": "client", "noise_multiplier": 1.0}
    start, update = np.zeros(100, np.float32), np.full(100, 0.5, np.float32)

    reply = privacy_mod(
        _message("train", {"w": start}, {KEY_CLIPPING_NORM: 0.5}), _context(central), _call_next(update)
    )

    sent = reply.content.array_records["arrays"]["w"].numpy()
    assert np.linalg.norm(sent - start) == pytest.approx(0.5, rel=1e-4)
