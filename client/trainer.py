"""Local training and evaluation of a message's model on a client's data (torch lives here).

One code path for both modes: the simulation's ClientApp calls it in its Ray actor, and the
client agent's warm worker calls it in a process that keeps torch, the model and the data loaded
across rounds. Replies carry weights, metrics and the data's fingerprint, never a row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from client.local_data import LocalData
from fedge.config import FedgeConfig
from fedge.protocol import (
    ARRAYS_KEY,
    CLIENT_INFO_KEY,
    CONFIG_KEY,
    EVAL_LOSS,
    INFO_FINGERPRINT,
    INFO_NAME,
    INFO_NUM_ROWS,
    METRICS_KEY,
    NUM_EXAMPLES,
    TRAIN_LOSS,
    TRAIN_SECONDS,
)
from fedge.serde import state_dict_from_arrays, state_dict_to_arrays
from fedge.tasks import Task, get_task
from fedge.tasks.training import evaluate_model, load_weights, resolve_device, train_model

__all__ = ["ClientIdentity", "evaluate_reply", "train_reply"]


@dataclass(frozen=True)
class ClientIdentity:
    """What a client may say about itself: its name, its data's fingerprint and row count."""

    name: str
    fingerprint: str
    num_rows: int
    seed: int = 0

    def record(self) -> ConfigRecord:
        """The ConfigRecord a train reply carries into the run's lineage."""
        return ConfigRecord(
            {INFO_NAME: self.name, INFO_FINGERPRINT: self.fingerprint, INFO_NUM_ROWS: self.num_rows}
        )


def _model(content: RecordDict, config: FedgeConfig) -> tuple[Task, torch.nn.Module]:
    task_cfg = config.task
    torch.set_num_threads(1)
    task = get_task(task_cfg.name)
    model = task.build_model(task_cfg)
    load_weights(model, state_dict_from_arrays(content[ARRAYS_KEY]))  # type: ignore[arg-type]
    return task, model


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}-{name}": value for name, value in metrics.items()}


def train_reply(
    content: RecordDict, config: FedgeConfig, local: LocalData, identity: ClientIdentity
) -> RecordDict:
    """Train the received global model on ``local.train``; return weights, metrics and identity.

    The metrics are ``train-loss`` and ``train-<primary metric>`` (``train-accuracy`` for a
    classification task, ``train-r2`` for regression), with the sample count and the seconds spent.
    """
    started = time.perf_counter()
    task_cfg = config.task
    task, model = _model(content, config)
    round_cfg: dict[str, Any] = dict(content.get(CONFIG_KEY, {}) or {})
    result = train_model(
        model,
        local.train,
        epochs=int(round_cfg.get("local-epochs", task_cfg.local_epochs)),
        lr=float(round_cfg.get("lr", task_cfg.lr)),
        batch_size=task_cfg.batch_size,
        momentum=task_cfg.momentum,
        seed=int(round_cfg.get("server-round", 0)) * 7919 + identity.seed,
        proximal_mu=float(round_cfg.get("proximal-mu", 0.0)),
        task=task,
        device=resolve_device(task_cfg.device),
    )
    primary = task.target.primary_metric
    metrics = MetricRecord(
        {
            TRAIN_LOSS: result.loss,
            **_prefixed("train", {k: v for k, v in result.metrics.items() if k == primary}),
            NUM_EXAMPLES: result.num_examples,
            TRAIN_SECONDS: time.perf_counter() - started,
        }
    )
    return RecordDict(
        {
            ARRAYS_KEY: state_dict_to_arrays(model.state_dict()),
            METRICS_KEY: metrics,
            CLIENT_INFO_KEY: identity.record(),
        }
    )


def evaluate_reply(content: RecordDict, config: FedgeConfig, local: LocalData) -> RecordDict:
    """Evaluate the received global model on the local validation rows; return metrics.

    The metrics are ``eval-loss`` and ``eval-<name>`` for every metric the task reports
    (classification: ``eval-accuracy``, ``eval-macro-f1``, binary also ``eval-auroc``; regression:
    ``eval-mse``, ``eval-mae``, ``eval-r2``), with the sample count.
    """
    task, model = _model(content, config)
    data = local.val if len(local.val) else local.train
    result = evaluate_model(model, data, task=task, device=resolve_device(config.task.device))
    metrics = MetricRecord(
        {EVAL_LOSS: result.loss, **_prefixed("eval", result.metrics), NUM_EXAMPLES: result.num_examples}
    )
    return RecordDict({METRICS_KEY: metrics})
