"""A client's train and evaluate replies carry the task's metrics, for classification and regression."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from client.local_data import load_simulation_partition
from client.trainer import ClientIdentity, evaluate_reply, train_reply
from fedge.config import FedgeConfig, TaskConfig
from fedge.serde import state_dict_from_arrays, state_dict_to_arrays
from fedge.tasks import get_task


def _content(config: FedgeConfig) -> RecordDict:
    torch.manual_seed(0)
    model = get_task(config.task.name).build_model(config.task)
    return RecordDict(
        {
            "arrays": state_dict_to_arrays(model.state_dict()),
            "config": ConfigRecord({"lr": config.task.lr, "local-epochs": 1, "server-round": 1}),
        }
    )


@pytest.mark.parametrize(
    ("name", "model", "train_keys", "eval_keys"),
    [
        ("wine", "mlp", {"train-accuracy"}, {"eval-accuracy", "eval-macro-f1"}),
        ("diabetes", "mlp", {"train-r2"}, {"eval-mse", "eval-mae", "eval-r2"}),
        ("shapes", "cnn", {"train-accuracy"}, {"eval-accuracy", "eval-macro-f1"}),
    ],
)
def test_replies_carry_loss_and_the_tasks_metrics(
    name: str, model: str, train_keys: set[str], eval_keys: set[str]
) -> None:
    config = FedgeConfig(task=TaskConfig(name=name, model=model, hidden=16, lr=0.01, device="cpu"))
    local = load_simulation_partition(
        task=config.task, partition_id=0, num_partitions=4, scheme="dirichlet", alpha=0.5, seed=1
    )
    identity = ClientIdentity(name="c0", fingerprint="f" * 64, num_rows=len(local.train) + len(local.val))
    content = _content(config)

    trained = train_reply(content, config, local, identity)
    evaluated = evaluate_reply(content, config, local)

    train_metrics, eval_metrics = dict(trained["metrics"]), dict(evaluated["metrics"])
    assert set(train_metrics) == {"train-loss", "num-examples", "train-seconds", *train_keys}
    assert set(eval_metrics) == {"eval-loss", "num-examples", *eval_keys}
    assert train_metrics["num-examples"] == len(local.train)
    assert eval_metrics["num-examples"] == len(local.val)
    assert all(np.isfinite(v) for v in (*train_metrics.values(), *eval_metrics.values()))
    weights = state_dict_from_arrays(trained["arrays"])
    assert all(t.device.type == "cpu" for t in weights.values())
