"""Differential privacy benchmarks: central accuracy at epsilon 1, 3 and 8 (delta 1e-5) vs non-private.

Each setting trains digits for ``--rounds`` rounds on ``--clients`` clients in an in-process harness:
the clients' own training code (:func:`client.trainer.train_reply`), Flower 1.42's own
``DifferentialPrivacyServerSideFixedClipping`` (clipping + Gaussian noise on the aggregate, equal
weights as its accountant requires) around FedAvg, and the noise multiplier that
:func:`coordinator.privacy.noise_for_target_epsilon` calibrates with Flower's ``RdpAccountant``
(client-level DP, every client every round, no sampling amplification: Flower 1.42's accounted mode).

    python benchmarks/privacy.py [--clients 10 50] [--rounds 5] [--local-epochs 2] [--clip 1.0]

Prints one table row per (clients, epsilon): noise multiplier, noise std on the mean update, and the
final central accuracy on the task's held-out rows (mean over ``--seeds`` noise seeds).

``--section secagg`` times a training round under SecAgg+ against a plain Message-API FedAvg round
with the same clients (``--secagg-clients 5 10 20``), both through
:class:`simulations.loopback_grid.LoopbackGrid` (fedge's real ClientApp in this process, no
network): the protocol's own cost (keys, shares, masking, unmasking) on top of the same training.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# Import the checkout's package, ahead of any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict
from flwr.app.message.message import make_message
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from client.local_data import load_simulation_partition
from client.trainer import ClientIdentity, train_reply
from coordinator.privacy import UNIT_WEIGHT_KEY, noise_for_target_epsilon
from fedge.config import load_config
from fedge.protocol import METRICS_KEY
from fedge.serde import state_dict_from_arrays, state_dict_to_arrays
from fedge.tasks import get_task
from fedge.tasks.training import evaluate_model, load_weights

EPSILONS = (1.0, 3.0, 8.0)
DELTA = 1e-5


def _metadata(node_id: int) -> Metadata:
    return Metadata(
        run_id=0, message_id=f"bench-{node_id}", src_node_id=node_id, dst_node_id=0,
        reply_to_message_id="bench", group_id="bench", created_at=0.0, ttl=3600.0, message_type="train",
    )  # fmt: skip


def run(clients: int, rounds: int, local_epochs: int, clip: float, epsilon: float | None, seed: int) -> float:
    """Final central accuracy with central DP at ``epsilon`` (``None``: FedAvg without DP)."""
    config = load_config(
        [
            f"simulation.num_clients={clients}",
            f"task.local_epochs={local_epochs}",
            "strategy.min_train_nodes=1",
        ]
    )
    task = get_task(config.task.name)
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    np.random.seed(seed)
    model = task.build_model(config.task)
    arrays = state_dict_to_arrays(model.state_dict())
    parts = []
    for pid in range(clients):
        local = load_simulation_partition(
            task=config.task, partition_id=pid, num_partitions=clients, scheme="iid", alpha=0.5, seed=42
        )
        parts.append((local, ClientIdentity(f"simulated-{pid}", "bench", len(local.train), seed=pid)))
    strategy: FedAvg | DifferentialPrivacyServerSideFixedClipping = FedAvg(min_train_nodes=1)
    if epsilon is not None:
        noise = noise_for_target_epsilon(
            target_epsilon=epsilon, delta=DELTA, rounds=rounds, sample_size=clients, population=clients
        )
        strategy = DifferentialPrivacyServerSideFixedClipping(
            FedAvg(min_train_nodes=1, weighted_by_key=UNIT_WEIGHT_KEY), noise, clip, clients
        )
    for server_round in range(1, rounds + 1):
        content = RecordDict(
            {
                "arrays": arrays,
                "config": ConfigRecord(
                    {"lr": config.task.lr, "local-epochs": local_epochs, "server-round": server_round}
                ),
            }
        )
        replies: list[Message] = []
        for pid, (local, identity) in enumerate(parts):
            reply = train_reply(content, config, local, identity)
            reply.metric_records[METRICS_KEY][UNIT_WEIGHT_KEY] = 1.0
            replies.append(make_message(_metadata(pid + 1), content=reply))
        if isinstance(strategy, DifferentialPrivacyServerSideFixedClipping):
            strategy.current_arrays = arrays  # what configure_train remembers: the round's global model
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        assert aggregated is not None
        arrays = ArrayRecord(dict(aggregated.items()))
    load_weights(model, state_dict_from_arrays(arrays))
    _, holdout = task.split_holdout(config.task)
    accuracy = evaluate_model(model, holdout, task=task).accuracy
    return float(accuracy) if np.isfinite(accuracy) else 0.0


def secagg_round_seconds(clients: int, rounds: int, secure: bool) -> float:
    """Mean seconds per training round through the loopback grid, with or without SecAgg+."""
    import tempfile

    from flwr.app import Context

    from coordinator.round_recorder import RoundRecorder
    from coordinator.secure_aggregation import run_secure_rounds
    from registry import RegistryConfig, RunCreate, open_registry
    from simulations.loopback_grid import LoopbackGrid

    config = load_config(
        [
            f"simulation.num_clients={clients}", f"strategy.num_rounds={rounds}", "task.local_epochs=1",
            f"strategy.min_train_nodes={clients}", f"strategy.min_available_nodes={clients}",
            f"strategy.secure_aggregation={str(secure).lower()}",
            f"privacy.secagg.num_shares={max(3, (clients // 2) | 1)}",
            f"privacy.secagg.reconstruction_threshold={max(2, ((clients // 2) | 1) // 2 + 1)}",
        ]
    )  # fmt: skip
    task = get_task(config.task.name)
    torch.set_num_threads(1)
    grid = LoopbackGrid(config, clients)
    initial = state_dict_to_arrays(task.build_model(config.task).state_dict())
    started = time.perf_counter()
    if secure:
        with tempfile.TemporaryDirectory() as root:
            registry = open_registry(RegistryConfig(root=root))
            try:
                registry.store.create_run(
                    RunCreate(run_id="b", task="digits", strategy="fedavg", num_rounds=rounds, config={},
                              config_hash="0" * 64)
                )  # fmt: skip
                recorder = RoundRecorder(
                    registry=registry, run_id="b", model=task.build_model(config.task), base_lineage={}
                )
                started = time.perf_counter()
                run_secure_rounds(
                    grid=grid, context=Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                               run_config={}),
                    config=config, recorder=recorder, initial_arrays=initial, dp=None,
                )  # fmt: skip
                elapsed = time.perf_counter() - started
            finally:
                registry.close()
    else:
        FedAvg(fraction_evaluate=0.0, min_train_nodes=clients, min_available_nodes=clients).start(
            grid=grid, initial_arrays=initial, num_rounds=rounds,
            train_config=ConfigRecord({"lr": config.task.lr, "local-epochs": 1}),
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    return elapsed / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--section", choices=("all", "dp", "secagg"), default="all")
    parser.add_argument("--secagg-clients", type=int, nargs="+", default=[5, 10, 20])
    args = parser.parse_args()
    logging.disable(logging.INFO)  # Flower logs every clip and noise draw
    if args.section in ("all", "secagg"):
        print(f"SecAgg+ vs plain round, digits, 1 local epoch, mean of {args.rounds} rounds (loopback grid)")
        print(f"{'clients':>7} {'plain s':>8} {'secagg s':>9} {'ratio':>6}")
        for clients in args.secagg_clients:
            for secure in (False, True):  # warm: each run config loads its partitions once
                secagg_round_seconds(clients, args.rounds, secure=secure)
            plain = secagg_round_seconds(clients, args.rounds, secure=False)
            secure = secagg_round_seconds(clients, args.rounds, secure=True)
            print(f"{clients:>7} {plain:>8.2f} {secure:>9.2f} {secure / plain:>6.2f}", flush=True)
        if args.section == "secagg":
            return
    print(
        f"digits · {args.rounds} rounds · {args.local_epochs} local epochs · clip {args.clip} · delta {DELTA}"
    )
    print(f"{'clients':>7} {'epsilon':>8} {'noise mult':>10} {'noise std':>10} {'accuracy':>9} {'s':>6}")
    for clients in args.clients:
        for epsilon in (None, *EPSILONS):
            started = time.perf_counter()
            accs = [
                run(clients, args.rounds, args.local_epochs, args.clip, epsilon, seed)
                for seed in range(1 if epsilon is None else args.seeds)
            ]
            noise = (
                noise_for_target_epsilon(
                    target_epsilon=epsilon,
                    delta=DELTA,
                    rounds=args.rounds,
                    sample_size=clients,
                    population=clients,
                )
                if epsilon is not None
                else 0.0
            )
            print(
                f"{clients:>7} {'inf' if epsilon is None else f'{epsilon:g}':>8} {noise:>10.3f} "
                f"{noise * args.clip / clients:>10.4f} {statistics.mean(accs):>9.3f} "
                f"{time.perf_counter() - started:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
