"""``fedge simulate scenario=byzantine``: what 2 attacking clients of 10 do to each aggregation strategy.

1. One real Flower federation (``simulate``) in which the partitions ``scenario.attackers`` send
   ``scenario.attack`` updates (``client/attack_harness.py``); the registry's checkpoints record in
   their lineage which updates validation dropped (skipped when ``scenario.attack`` is ``none``).
2. The grid: every strategy of ``scenario.strategies`` under no attack and every attack of
   ``scenario.attacks``. This is a FAST HARNESS, not a Flower federation: it runs, in this
   process and for ``strategy.num_rounds`` rounds, the clients' own training code
   (``client.trainer.train_reply``) on the same seeded partitions, the same attack harness, the
   same update validation (``coordinator.update_validation``) and the Flower strategy classes'
   own ``aggregate_train`` on real Flower Messages. A grid of 7 strategies x 4 conditions through
   real Flower simulations takes many minutes on 2 cores; this takes seconds per cell.

``fedavg-unvalidated`` is FedAvg with update validation off: the collapse validation prevents.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict
from flwr.app.message.message import make_message

from client.attack_harness import attacked_reply
from client.local_data import LocalData, load_simulation_partition
from client.trainer import ClientIdentity, train_reply
from coordinator.strategies import strategy_class, strategy_kwargs
from coordinator.update_validation import GlobalModel, Rejection, validate_replies
from fedge.config import FedgeConfig, StrategyConfig, UpdateValidationConfig
from fedge.serde import state_dict_from_arrays, state_dict_to_arrays
from fedge.tasks import get_task
from fedge.tasks.training import evaluate_model, load_weights
from simulations.runner import SimulationReport, simulate

__all__ = [
    "UNVALIDATED",
    "ByzantineReport",
    "Cell",
    "run_byzantine_scenario",
    "run_cell",
    "scenario_strategy",
]

log = logging.getLogger(__name__)

# FedAvg with update validation off (shows what validation prevents).
UNVALIDATED = "fedavg-unvalidated"

# Strategy arguments for 2 attackers among 10 clients. Bulyan needs 4f + 3 replies, so with 10
# clients Flower's Bulyan tolerates f = 1 at most (docs/robustness.md).
ROBUST_PARAMS: dict[str, dict[str, Any]] = {
    "krum": {"num_malicious_nodes": 2},
    "multikrum": {"num_malicious_nodes": 2, "num_nodes_to_select": 6},
    "bulyan": {"num_malicious_nodes": 1},
    "fedtrimmedavg": {"beta": 0.2},
}


@dataclass(frozen=True)
class Cell:
    """One strategy under one attack: final central accuracy and the updates validation dropped."""

    strategy: str
    attack: str
    accuracy: float
    rejected: tuple[Rejection, ...] = ()
    skipped_rounds: int = 0

    @property
    def rejected_by_check(self) -> dict[str, int]:
        """How many updates each check dropped, over all rounds."""
        return dict(Counter(r.check for r in self.rejected))


@dataclass
class ByzantineReport:
    """What the scenario showed."""

    real_run: SimulationReport | None = None
    real_rejections: list[dict[str, Any]] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    plot_path: Path | None = None

    def accuracy(self, strategy: str, attack: str) -> float | None:
        """The final accuracy of one cell, if it ran."""
        return next((c.accuracy for c in self.cells if c.strategy == strategy and c.attack == attack), None)

    @property
    def succeeded(self) -> bool:
        """The real run (when asked for) completed and every cell of the grid ran."""
        return self.real_run is None or self.real_run.succeeded


def scenario_strategy(config: FedgeConfig, name: str) -> tuple[StrategyConfig, UpdateValidationConfig]:
    """The strategy config of one grid row (``fedavg-unvalidated``: FedAvg, validation off)."""
    base = config.strategy
    flower_name = "fedavg" if name == UNVALIDATED else name
    params = dict(base.params) if flower_name == base.name else dict(ROBUST_PARAMS.get(flower_name, {}))
    validation = copy.deepcopy(base.validation)
    if name == UNVALIDATED:
        validation.enabled = False
    strategy = copy.deepcopy(base)
    strategy.name, strategy.params, strategy.validation = flower_name, params, validation
    return strategy, validation


def _metadata(node_id: int) -> Metadata:
    return Metadata(
        run_id=0, message_id=f"harness-{node_id}", src_node_id=node_id, dst_node_id=0,
        reply_to_message_id="harness", group_id="harness", created_at=0.0, ttl=3600.0,
        message_type="train",
    )  # fmt: skip


def _partitions(config: FedgeConfig) -> list[tuple[LocalData, ClientIdentity]]:
    sim = config.simulation
    out = []
    for pid in range(sim.num_clients):
        local = load_simulation_partition(
            task=config.task, partition_id=pid, num_partitions=sim.num_clients, scheme=sim.partition,
            alpha=sim.alpha, seed=sim.seed,
        )  # fmt: skip
        out.append((local, ClientIdentity(f"simulated-{pid}", "harness", len(local.train), seed=pid)))
    return out


def run_cell(
    config: FedgeConfig,
    strategy_name: str,
    attack: str,
    *,
    partitions: list[tuple[LocalData, ClientIdentity]] | None = None,
) -> Cell:
    """Train ``strategy_name`` for ``strategy.num_rounds`` rounds with ``scenario.attackers`` running
    ``attack`` (``none``: clean) in the fast harness; return the final central accuracy."""
    cfg = copy.deepcopy(config)
    cfg.scenario.attack = attack
    strategy_cfg, validation = scenario_strategy(cfg, strategy_name)
    cls = strategy_class(strategy_cfg.name)
    strategy = cls(**strategy_kwargs(strategy_cfg, cls))
    task = get_task(cfg.task.name)
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    model = task.build_model(cfg.task)
    arrays = state_dict_to_arrays(model.state_dict())
    parts = partitions if partitions is not None else _partitions(cfg)
    rejected: list[Rejection] = []
    skipped = 0
    for server_round in range(1, strategy_cfg.num_rounds + 1):
        content = RecordDict(
            {
                "arrays": arrays,
                "config": ConfigRecord(
                    {"lr": cfg.task.lr, "local-epochs": cfg.task.local_epochs, "server-round": server_round}
                ),
            }
        )
        replies: list[Message] = []
        for pid, (local, identity) in enumerate(parts):
            reply = attacked_reply(train_reply(content, cfg, local, identity), content, cfg, pid)
            replies.append(make_message(_metadata(pid + 1), content=reply))
        result = validate_replies(replies, GlobalModel(arrays), validation)
        rejected.extend(result.rejected)
        aggregated, _ = strategy.aggregate_train(server_round, result.accepted)
        if aggregated is None:
            skipped += 1  # the strategy declined to aggregate (Bulyan with too few replies)
        else:
            arrays = ArrayRecord(dict(aggregated.items()))
    load_weights(model, state_dict_from_arrays(arrays))
    _, holdout = task.split_holdout(cfg.task)
    accuracy = evaluate_model(model, holdout, task=task).accuracy
    if not np.isfinite(accuracy):
        accuracy = 0.0
    return Cell(strategy_name, attack, float(accuracy), tuple(rejected), skipped)


def run_byzantine_scenario(
    config: FedgeConfig, *, on_step: Callable[[str], None] | None = None
) -> ByzantineReport:
    """Run the real Flower federation with attackers (if ``scenario.attack`` is set), then the grid."""
    step = on_step or (lambda text: log.info("%s", text))
    sc = config.scenario
    report = ByzantineReport()
    if sc.attack != "none":
        step(
            f"1/2 a real Flower federation: partitions {list(sc.attackers)} send {sc.attack!r} updates "
            f"({config.strategy.name}, {config.strategy.num_rounds} rounds)"
        )
        report.real_run = simulate(config)
        for ckpt in report.real_run.outcome.checkpoints:
            for r in ckpt.lineage.get("rejected_updates", []):
                report.real_rejections.append({"round": ckpt.round, **r})
    conditions = ["none", *[a for a in sc.attacks if a != "none"]]
    if sc.strategies and sc.attacks:
        partitions = _partitions(config)
        total = len(sc.strategies) * len(conditions)
        step(
            f"2/2 the grid (fast in-process harness): {len(sc.strategies)} strategies x "
            f"{len(conditions)} conditions"
        )
        flwr_log = logging.getLogger("flwr")
        level = flwr_log.level
        flwr_log.setLevel(logging.WARNING)  # Flower logs every aggregate_train at INFO: 100s of lines
        try:
            for attack in conditions:
                for name in sc.strategies:
                    cell = run_cell(config, name, attack, partitions=partitions)
                    report.cells.append(cell)
                    step(
                        f"  [{len(report.cells)}/{total}] {name} under {attack}: accuracy {cell.accuracy:.3f}"
                    )
        finally:
            flwr_log.setLevel(level)
    if sc.plot and report.cells:
        # beside the real run's log (its run folder) when there was one, else under registry.root
        folder = Path(config.registry.root).expanduser().resolve()
        if report.real_run is not None and report.real_run.outcome.log_path is not None:
            folder = Path(report.real_run.outcome.log_path).parent
        report.plot_path = plot_grid(report, folder / sc.plot)
    return report


def plot_grid(report: ByzantineReport, path: Path) -> Path | None:
    """A grouped bar chart: final accuracy per strategy, one bar per condition."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'fedge[dev]'): no plot")
        return None
    strategies = list(dict.fromkeys(c.strategy for c in report.cells))
    attacks = list(dict.fromkeys(c.attack for c in report.cells))
    width = 0.8 / len(attacks)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(strategies)), 4.5))
    x = np.arange(len(strategies))
    for i, attack in enumerate(attacks):
        values = [report.accuracy(s, attack) or 0.0 for s in strategies]
        ax.bar(
            x + (i - (len(attacks) - 1) / 2) * width,
            values,
            width,
            label="clean" if attack == "none" else attack,
        )
    ax.set(title="final accuracy, 2 of 10 clients attacking", xticks=x, ylim=(0, 1), ylabel="accuracy")
    ax.set_xticklabels(strategies, rotation=20)
    ax.legend(fontsize=8, loc="lower left", ncol=len(attacks), framealpha=0.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
