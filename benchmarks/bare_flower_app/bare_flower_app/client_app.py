"""Bare ClientApp: local SGD on this node's partition (same data and loop as fedge's client)."""

from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from bare_flower_app.common import task_config
from client.local_data import LocalData, load_simulation_partition
from fedge.tasks import TaskConfig, get_task
from fedge.tasks.training import evaluate_model, train_model

app = ClientApp()


@lru_cache(maxsize=4)
def _local_data(
    split: tuple[str, float, float, int],
    partition_id: int,
    num_partitions: int,
    scheme: str,
    alpha: float,
    seed: int,
) -> LocalData:
    # Cached per process, like fedge's client: a warm Ray actor keeps its partition.
    name, test_fraction, val_fraction, data_seed = split
    return load_simulation_partition(
        task=TaskConfig(
            name=name, test_fraction=test_fraction, val_fraction=val_fraction, data_seed=data_seed
        ),
        partition_id=partition_id,
        num_partitions=num_partitions,
        scheme=scheme,
        alpha=alpha,
        seed=seed,
    )


def _setup(msg: Message, context: Context) -> tuple[torch.nn.Module, LocalData, TaskConfig]:
    torch.set_num_threads(1)
    rc = context.run_config
    cfg = task_config(rc)
    local = _local_data(
        (cfg.name, cfg.test_fraction, cfg.val_fraction, cfg.data_seed),
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
        str(rc["partition"]),
        float(rc["alpha"]),
        int(rc["partition-seed"]),
    )
    model = get_task(cfg.name).build_model(cfg)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model, local, cfg


@app.train()
def train(msg: Message, context: Context) -> Message:
    model, local, cfg = _setup(msg, context)
    round_cfg = msg.content.get("config", {}) or {}
    result = train_model(
        model,
        local.train,
        epochs=int(round_cfg.get("local-epochs", cfg.local_epochs)),
        lr=float(round_cfg.get("lr", cfg.lr)),
        batch_size=cfg.batch_size,
        momentum=cfg.momentum,
        seed=int(round_cfg.get("server-round", 0)) * 7919 + int(context.node_config["partition-id"]),
    )
    metrics = MetricRecord(
        {
            "train-loss": result.loss,
            "train-accuracy": result.accuracy,
            "num-examples": result.num_examples,
        }
    )
    arrays = ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()})
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model, local, _ = _setup(msg, context)
    data = local.val if len(local.val) else local.train
    result = evaluate_model(model, data)
    metrics = MetricRecord(
        {
            "eval-loss": result.loss,
            "eval-accuracy": result.accuracy,
            "num-examples": result.num_examples,
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
