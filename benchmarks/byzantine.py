"""Byzantine robustness benchmarks: the strategy x attack table, and the cost of update validation.

Sections:

- ``validation``: :func:`coordinator.update_validation.validate_replies` on replies of a 1M-parameter
  float32 model (4 arrays: 1000x500, 500, 500x999, 999 ... ~1.0M values), per reply (goal < 5 ms).
- ``table``: final central accuracy of each strategy with 2 of 10 digits clients attacking
  (sign-flip, scale x10, random) and clean, through the scenario's fast in-process harness
  (:mod:`simulations.byzantine_scenario`: the clients' own training code, the attack harness, update
  validation, Flower's own ``aggregate_train``). Goal: a robust strategy within 2 points of clean;
  ``fedavg-unvalidated`` shows FedAvg's collapse without validation.

    python benchmarks/byzantine.py [--rounds 10] [--local-epochs 5] [--section all|validation|table]
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

from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message

from coordinator.update_validation import GlobalModel, validate_replies
from fedge.config import UpdateValidationConfig, load_config

SHAPES = {"w1": (1000, 500), "b1": (500,), "w2": (500, 999), "b2": (999,)}


def _message(node: int, arrays: dict[str, np.ndarray]) -> Message:
    meta = Metadata(
        run_id=0, message_id=str(node), src_node_id=node, dst_node_id=0, reply_to_message_id="q",
        group_id="1", created_at=0.0, ttl=60.0, message_type="train",
    )  # fmt: skip
    record = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return make_message(
        meta, content=RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": 100})})
    )


def bench_validation(replies: int = 10, repeats: int = 5) -> float:
    """Milliseconds per 1M-parameter reply (median of ``repeats`` rounds of ``replies`` replies)."""
    rng = np.random.default_rng(0)
    base = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    size = sum(v.size for v in base.values())
    model = GlobalModel(ArrayRecord({k: Array(v) for k, v in base.items()}))
    msgs = [
        _message(
            n, {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in base.items()}
        )
        for n in range(1, replies + 1)
    ]
    config = UpdateValidationConfig()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = validate_replies(msgs, model, config)
        times.append((time.perf_counter() - started) / replies * 1000)
        assert len(result.accepted) == replies
    started = time.perf_counter()
    GlobalModel(ArrayRecord({k: Array(v) for k, v in base.items()}))
    per_round = (time.perf_counter() - started) * 1000
    ms = statistics.median(times)
    print(
        f"validation: {size:,} parameters, {replies} replies: {ms:.2f} ms per reply (goal < 5 ms; "
        f"min {min(times):.2f}); decoding the global model once per round: {per_round:.2f} ms"
    )
    return ms


def bench_table(rounds: int, local_epochs: int) -> None:
    from rich.console import Console

    from fedge.cli.byzantine_cmd import print_byzantine_report
    from simulations.byzantine_scenario import ByzantineReport, _partitions, run_cell

    logging.getLogger("flwr").setLevel(logging.WARNING)
    config = load_config(
        ["scenario=byzantine", f"strategy.num_rounds={rounds}", f"task.local_epochs={local_epochs}"]
    )
    sc = config.scenario
    parts = _partitions(config)
    report = ByzantineReport()
    started = time.perf_counter()
    for attack in ["none", *sc.attacks]:
        for name in sc.strategies:
            report.cells.append(run_cell(config, name, attack, partitions=parts))
    elapsed = time.perf_counter() - started
    print_byzantine_report(Console(), report)
    clean = report.accuracy("fedavg", "none") or 0.0
    print(
        f"clean FedAvg accuracy {clean:.3f}; {rounds} rounds x {local_epochs} local epochs; "
        f"{len(report.cells)} cells in {elapsed:.0f}s"
    )
    for attack in sc.attacks:
        robust = [
            (c.strategy, c.accuracy) for c in report.cells
            if c.attack == attack and c.strategy not in ("fedavg-unvalidated",)
        ]  # fmt: skip
        best = max(robust, key=lambda x: x[1])
        within = [s for s, a in robust if a >= clean - 0.02]
        print(
            f"{attack}: best {best[0]} {best[1]:.3f} ({(best[1] - clean) * 100:+.1f} points vs clean); "
            f"within 2 points of clean: {', '.join(within) or 'none'}; FedAvg without validation "
            f"{report.accuracy('fedavg-unvalidated', attack):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--section", choices=["all", "validation", "table"], default="all")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=5)
    args = parser.parse_args()
    if args.section in ("all", "validation"):
        bench_validation()
    if args.section in ("all", "table"):
        bench_table(args.rounds, args.local_epochs)


if __name__ == "__main__":
    main()
