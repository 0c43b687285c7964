"""The fedge Flower ClientApp: trains the task's model on this client's data, sends weights only.

Two ways to run, one handler per message type:

- deployment (``fedge client start``): the SuperNode's node config names the client agent's warm
  worker socket; this process (a fresh one per message in Flower 1.42) forwards the message's
  records there and returns the reply. It never imports torch.
- simulation: no worker; the records are handled here, on this virtual node's seeded partition.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client.packing_mod import packing_mod
from client.training_privacy import privacy_mod
from fedge.protocol import DRIFT_QUERY, RUN_CONFIG_KEY, WORKER_SOCKET_KEY, decode_run_config

if TYPE_CHECKING:
    from client.local_data import LocalData
    from client.trainer import ClientIdentity
    from fedge.config import FedgeConfig

__all__ = ["app"]

log = logging.getLogger(__name__)

# Packed content (fedge/packed_content.py) is unpacked first; then differential privacy for training
# (docs/privacy.md): LocalDpMod or client-side clipping, per the run.
app = ClientApp(mods=[packing_mod, privacy_mod])


@lru_cache(maxsize=4)
def _simulated(raw_config: str, partition_id: int, num_partitions: int) -> tuple[LocalData, ClientIdentity]:
    # Cached per process, keyed by the run config as sent: a warm Ray actor serves many rounds
    # without reloading (or re-parsing) its data.
    from client.data_files import dataset_fingerprint
    from client.local_data import load_simulation_partition
    from client.trainer import ClientIdentity

    config = decode_run_config({RUN_CONFIG_KEY: raw_config})
    sim = config.simulation
    local = load_simulation_partition(
        task=config.task,
        partition_id=partition_id,
        num_partitions=num_partitions,
        scheme=sim.partition,
        alpha=sim.alpha,
        seed=sim.seed,
    )
    rows = len(local.train) + len(local.val)
    identity = ClientIdentity(
        name=f"simulated-{partition_id}",
        fingerprint=dataset_fingerprint(local.train, local.val),
        num_rows=rows,
        seed=partition_id,
    )
    return local, identity


def _handle(msg: Message, context: Context) -> Message:
    if msg.metadata.message_type == "train":
        from client.secure_aggregation import is_secagg_train, secure_train_reply

        if is_secagg_train(msg.content):  # SecAgg+'s collect stage: a legacy fitins message
            return Message(
                content=secure_train_reply(msg.content, lambda content: _serve(msg, content, context)),
                reply_to=msg,
            )
    return Message(content=_serve(msg, msg.content, context), reply_to=msg)


def _serve(msg: Message, content: RecordDict, context: Context) -> RecordDict:
    raw = str(context.run_config.get(RUN_CONFIG_KEY, ""))
    message_type = msg.metadata.message_type
    worker = context.node_config.get(WORKER_SOCKET_KEY)
    if worker:
        from client.worker import call_worker

        return call_worker(str(worker), message_type, raw, content)
    from client import trainer

    local, identity = _simulated(
        raw, int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    )
    config = decode_run_config(context.run_config)
    partition_id = int(context.node_config["partition-id"])
    local = _current(local, config, partition_id)
    if message_type == "train":
        _pay_for_training(content, context, config)
        reply = trainer.train_reply(content, config, local, identity)
        from client.attack_harness import attacked_reply  # test harness: scenario=byzantine only

        return attacked_reply(reply, content, config, partition_id)
    if message_type == DRIFT_QUERY:
        return _drift_reply(msg, context, config, local, partition_id)
    return trainer.evaluate_reply(content, config, local)


def _current(local: LocalData, config: FedgeConfig, partition_id: int) -> LocalData:
    # Simulation only: a client's data after a configured covariate shift (drift scenario).
    from client.drift_telemetry import simulated_current_data

    return simulated_current_data(local, config.drift, partition_id)


def _pay_for_training(content: RecordDict, context: Context, config: FedgeConfig) -> None:
    # privacy.mode=local: this site's ledger (the one drift telemetry spends from) pays first.
    if config.privacy.mode != "local":
        return
    from pathlib import Path

    from client.drift_telemetry import ledger_for
    from client.training_privacy import spend_for_training

    ledger = ledger_for(
        dict(context.node_config), config.drift, Path(config.registry.root) / "client-ledgers"
    )
    spend_for_training(ledger, config.privacy, content, config.run_id)


def _drift_reply(
    msg: Message, context: Context, config: FedgeConfig, local: LocalData, partition_id: int
) -> RecordDict:
    from pathlib import Path

    from client.drift_telemetry import drift_query_reply, ledger_for

    ledger = ledger_for(
        dict(context.node_config), config.drift, Path(config.registry.root) / "client-ledgers"
    )
    return drift_query_reply(msg.content, config, local, ledger=ledger, partition_id=partition_id)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on local data; reply with weights, metrics, fingerprint."""
    return _handle(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the local validation rows; reply with metrics."""
    return _handle(msg, context)


@app.query("drift")
def drift(msg: Message, context: Context) -> Message:
    """Answer a drift query with noisy counts only (see :mod:`client.drift_telemetry`)."""
    return _handle(msg, context)
