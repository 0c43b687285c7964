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
    EVAL_ACCURACY,
    EVAL_LOSS,
    INFO_FINGERPRINT,
    INFO_NAME,
    INFO_NUM_ROWS,
    METRICS_KEY,
    NUM_EXAMPLES,
    TRAIN_ACCURACY,
    TRAIN_LOSS,
    TRAIN_SECONDS,
)
from fedge.serde import state_dict_from_arrays, state_dict_to_arrays
from fedge.tasks import get_task
from fedge.tasks.training import evaluate_model, load_weights, train_model

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


def _model(content: RecordDict, config: FedgeConfig) -> torch.nn.Module:
    task_cfg = config.task
    torch.set_num_threads(1)
    model = get_task(task_cfg.name).build_model(task_cfg)
    load_weights(model, state_dict_from_arrays(content[ARRAYS_KEY]))  # type: ignore[arg-type]
    return model


def train_reply(
    content: RecordDict, config: FedgeConfig, local: LocalData, identity: ClientIdentity
) -> RecordDict:
    """Train the received global model on ``local.train``; return weights, metrics and identity."""
    started = time.perf_counter()
    task_cfg = config.task
    model = _model(content, config)
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
    )
    metrics = MetricRecord(
        {
            TRAIN_LOSS: result.loss,
            TRAIN_ACCURACY: result.accuracy,
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


def evaluate_reply(content: RecordDict, config: dict[str, Any], local: LocalData) -> RecordDict:
    """Evaluate the received global model on the local validation rows; return metrics."""
    model = _model(content, config)
    data = local.val if len(local.val) else local.train
    result = evaluate_model(model, data)
    metrics = MetricRecord(
        {EVAL_LOSS: result.loss, EVAL_ACCURACY: result.accuracy, NUM_EXAMPLES: result.num_examples}
    )
    return RecordDict({METRICS_KEY: metrics})
