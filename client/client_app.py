"""The fedge Flower ClientApp: trains the task's model on this client's data, sends weights only."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.local_data import LocalData, load_simulation_partition
from fedge.protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    EVAL_ACCURACY,
    EVAL_LOSS,
    METRICS_KEY,
    NUM_EXAMPLES,
    RUN_CONFIG_KEY,
    TRAIN_ACCURACY,
    TRAIN_LOSS,
    decode_run_config,
)
from fedge.serde import state_dict_from_arrays, state_dict_to_arrays
from fedge.tasks import TaskConfig, get_task
from fedge.tasks.training import evaluate_model, load_weights, train_model

__all__ = ["app"]

log = logging.getLogger(__name__)

app = ClientApp()


def _task_config(config: dict[str, Any]) -> TaskConfig:
    return TaskConfig(**config["task"])


@lru_cache(maxsize=4)
def _local_data(raw_config: str, partition_id: int, num_partitions: int) -> LocalData:
    # Cached per process, keyed by the run config as sent: a warm Ray actor serves many rounds
    # without reloading (or re-parsing) its data.
    config = decode_run_config({RUN_CONFIG_KEY: raw_config})
    sim = config["simulation"]
    return load_simulation_partition(
        task=_task_config(config),
        partition_id=partition_id,
        num_partitions=num_partitions,
        scheme=sim["partition"],
        alpha=float(sim["alpha"]),
        seed=int(sim["seed"]),
    )


def _current(local: LocalData, config: dict[str, Any], partition_id: int) -> LocalData:
    # Simulation only: a client's data after a configured covariate shift (see client.drift_telemetry).
    from client.drift_telemetry import simulated_current_data

    return simulated_current_data(local, config.get("drift"), partition_id)


def _setup(msg: Message, context: Context) -> tuple[torch.nn.Module, LocalData, dict[str, Any]]:
    config = decode_run_config(context.run_config)
    task_cfg = _task_config(config)
    torch.set_num_threads(1)
    local = _local_data(
        str(context.run_config[RUN_CONFIG_KEY]),
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
    )
    local = _current(local, config, int(context.node_config["partition-id"]))
    model = get_task(task_cfg.name).build_model(task_cfg)
    load_weights(model, state_dict_from_arrays(msg.content[ARRAYS_KEY]))  # type: ignore[arg-type]
    return model, local, config


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on local data; reply with weights and metrics."""
    model, local, config = _setup(msg, context)
    task_cfg = _task_config(config)
    round_cfg: dict[str, Any] = dict(msg.content.get(CONFIG_KEY, {}) or {})
    result = train_model(
        model,
        local.train,
        epochs=int(round_cfg.get("local-epochs", task_cfg.local_epochs)),
        lr=float(round_cfg.get("lr", task_cfg.lr)),
        batch_size=task_cfg.batch_size,
        momentum=task_cfg.momentum,
        seed=int(round_cfg.get("server-round", 0)) * 7919 + int(context.node_config["partition-id"]),
        proximal_mu=float(round_cfg.get("proximal-mu", 0.0)),
    )
    metrics = MetricRecord(
        {
            TRAIN_LOSS: result.loss,
            TRAIN_ACCURACY: result.accuracy,
            NUM_EXAMPLES: result.num_examples,
        }
    )
    content = RecordDict({ARRAYS_KEY: state_dict_to_arrays(model.state_dict()), METRICS_KEY: metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the local validation rows; reply with metrics."""
    model, local, _ = _setup(msg, context)
    data = local.val if len(local.val) else local.train
    result = evaluate_model(model, data)
    metrics = MetricRecord(
        {EVAL_LOSS: result.loss, EVAL_ACCURACY: result.accuracy, NUM_EXAMPLES: result.num_examples}
    )
    return Message(content=RecordDict({METRICS_KEY: metrics}), reply_to=msg)


@app.query("drift")
def drift(msg: Message, context: Context) -> Message:
    """Answer a drift query with noisy counts only (see :mod:`client.drift_telemetry`)."""
    from pathlib import Path

    from client.drift_telemetry import drift_reply, ledger_for
    from fedge.drift_summary import DriftSettings
    from fedge.tasks.training import predict_logits

    config = decode_run_config(context.run_config)
    settings = DriftSettings.from_dict(config.get("drift"))
    local = _local_data(
        str(context.run_config[RUN_CONFIG_KEY]),
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
    )
    local = _current(local, config, int(context.node_config["partition-id"]))
    predict = None
    if ARRAYS_KEY in msg.content:
        model = get_task(config["task"]["name"]).build_model(_task_config(config))
        load_weights(model, state_dict_from_arrays(msg.content[ARRAYS_KEY]))  # type: ignore[arg-type]
        predict = lambda rows: predict_logits(model, rows).argmax(-1)  # noqa: E731
    ledger = ledger_for(
        dict(context.node_config), settings, Path(config["registry"]["root"]) / "client-ledgers"
    )
    reply = drift_reply(
        msg.content,
        local,
        ledger,
        settings,
        predict=predict,
        partition_id=int(context.node_config["partition-id"]),
    )
    return Message(content=reply, reply_to=msg)
