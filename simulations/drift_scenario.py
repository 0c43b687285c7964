"""``fedge simulate scenario=drift``: drift detected without seeing data, and the retraining it opens.

1. Train and register ``v1`` (its drift reference fixed from the clients' noisy histograms).
2. Approve and promote ``v1`` to ``staging`` and ``production`` as ``scenario.actor``.
3. Monitor: a Flower run of the same ServerApp in ``mode=monitor`` queries ``drift.windows`` windows;
   from ``drift.shift_from_window`` on, clients ``drift.shift_clients`` shift every feature by
   ``drift.shift_size`` standard deviations. The policy decides as each window lands.
4. The fired decision (a requested run, its evidence in the audit log) is launched: a training run
   warm-started from ``production`` on the clients' current (shifted) data registers ``v2``.
5. Accuracy of ``v1`` and ``v2`` on the shifted clients' data and on the held-out rows; a plot.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from client.drift_telemetry import shift_rows
from client.local_data import load_simulation_partition
from coordinator.drift.launch import SimulationLauncher
from coordinator.drift.policy import RetrainRequest
from coordinator.drift.store import DriftReport, DriftReportStore, DriftTrigger
from coordinator.lifecycle import RunOutcome
from fedge.config import FedgeConfig, RegistryConfig
from fedge.serde import state_dict_from_safetensors
from fedge.tasks import Dataset, get_task
from fedge.tasks.training import evaluate_model, load_weights
from registry import ModelVersion, Registry, approve, open_registry, promote
from simulations.runner import SimulationReport, simulate

__all__ = ["DriftScenarioReport", "VersionAccuracy", "run_drift_scenario"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionAccuracy:
    """A version's accuracy on the shifted clients' data and on the held-out rows."""

    version: str
    shifted_accuracy: float
    holdout_accuracy: float


@dataclass
class DriftScenarioReport:
    """What the scenario showed."""

    train: SimulationReport
    monitor: SimulationReport | None = None
    reports: list[DriftReport] = field(default_factory=list)
    trigger: DriftTrigger | None = None
    detection_window: int | None = None
    shift_from_window: int = 0
    retrain: RunOutcome | None = None
    accuracies: list[VersionAccuracy] = field(default_factory=list)
    plot_path: Path | None = None

    @property
    def windows_to_detect(self) -> int | None:
        """Windows from the shift to the trigger, counting both (1 = the first shifted window)."""
        if self.detection_window is None:
            return None
        return self.detection_window - self.shift_from_window + 1

    @property
    def succeeded(self) -> bool:
        """Detected within 2 windows, retrained, and a new version registered."""
        return (
            self.windows_to_detect is not None
            and 1 <= self.windows_to_detect <= 2
            and self.retrain is not None
            and self.retrain.version is not None
        )


def _absolute(config: FedgeConfig) -> RegistryConfig:
    return replace(config.registry, root=str(Path(config.registry.root).expanduser().resolve()))


def _shifted_data(config: FedgeConfig) -> Dataset:
    """The shifted clients' rows as they are after the shift (what the monitored model now meets)."""
    task_cfg, sim, drift = config.task, config.simulation, config.drift
    parts = []
    for pid in drift.shift_clients:
        local = load_simulation_partition(
            task=task_cfg, partition_id=pid, num_partitions=sim.num_clients, scheme=sim.partition,
            alpha=sim.alpha, seed=sim.seed,
        )  # fmt: skip
        x = np.concatenate([local.train.x, local.val.x])
        y = np.concatenate([local.train.y, local.val.y])
        parts.append(Dataset(shift_rows(x, drift.shift_size, reference=x).astype(np.float32), y))
    return Dataset(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))


def _accuracy(registry: Registry, version: ModelVersion, config: FedgeConfig) -> VersionAccuracy:
    task_cfg = config.task
    task = get_task(task_cfg.name)
    model = task.build_model(task_cfg)
    load_weights(model, state_dict_from_safetensors(registry.read_artifact(version, "weights")))
    _, holdout = task.split_holdout(task_cfg)
    return VersionAccuracy(
        f"{version.name}:{version.number}",
        evaluate_model(model, _shifted_data(config)).accuracy,
        evaluate_model(model, holdout).accuracy,
    )


def run_drift_scenario(
    config: FedgeConfig, *, on_step: Callable[[str], None] | None = None
) -> DriftScenarioReport:
    """Run the scenario end to end (three Flower runs on managed simulation SuperLinks)."""
    step = on_step or (lambda text: log.info("%s", text))
    actor = config.scenario.actor
    train_config = copy.deepcopy(config)
    train_config.drift.shift_active = False
    step("1/5 training the monitored version")
    report = DriftScenarioReport(
        train=simulate(train_config), shift_from_window=config.drift.shift_from_window
    )
    if not report.train.succeeded or report.train.outcome.version is None:
        return report
    v1 = report.train.outcome.version
    registry_config = _absolute(config)
    registry = open_registry(registry_config)
    store = DriftReportStore.from_url(registry_config.resolved_database_url())
    try:
        ref = f"{v1.name}:{v1.number}"
        step(f"2/5 releasing {ref} to production as {actor!r}")
        for alias in ("staging", "production"):
            approve(
                registry, ref=ref, alias=alias, actor=actor, comment="drift scenario: monitored baseline",
                aliases=config.registry.aliases, gates=config.registry.gates,
            )  # fmt: skip
        promote(
            registry, moves=[(ref, "staging"), (ref, "production")], actor=actor,
            reason="drift scenario: monitored baseline", gates=config.registry.gates,
            aliases=config.registry.aliases,
        )  # fmt: skip
        step(
            f"3/5 monitoring {config.drift.windows} windows "
            f"(shift from window {config.drift.shift_from_window})"
        )
        monitor_config = copy.deepcopy(train_config)
        monitor_config.mode = "monitor"
        report.monitor = simulate(monitor_config)
        report.reports = store.reports(v1.name, version=v1.number)
        fired = [
            t
            for t in store.triggers(v1.name)
            if t.version == v1.number and t.outcome in ("requested", "started")
        ]
        report.trigger = fired[-1] if fired else None  # newest first: the first one that fired
        if report.trigger is None:
            return report
        evidence = report.trigger.evidence
        if "windows" in evidence:  # the drift rule names its windows
            report.detection_window = int(evidence["windows"][-1]["window"])
        else:  # the performance rule fired on the newest window stored by then
            fired_at = report.trigger.created_at
            report.detection_window = max(
                (r.window for r in report.reports if r.created_at <= fired_at),
                default=max(r.window for r in report.reports),
            )
        step(
            f"4/5 the policy fired at window {report.detection_window}: retraining ({report.trigger.run_id})"
        )
        launcher = SimulationLauncher(
            registry_config,
            work_dir=Path(registry_config.root) / "runs",
            background=False,
            overrides={"drift": {"shift_active": True}},  # the clients train on the data they have now
        )
        t = report.trigger
        launcher(
            RetrainRequest(t.run_id or "", v1.name, v1.number, t.reason, t.evidence, f"{v1.name}@production")
        )
        store.set_outcome(t.id, "started")
        report.retrain = launcher.outcomes.get(t.run_id or "")
        step("5/5 comparing the versions on the shifted data")
        versions = [v1] + ([report.retrain.version] if report.retrain and report.retrain.version else [])
        report.accuracies = [_accuracy(registry, v, config) for v in versions]
        if config.scenario.plot:
            report.plot_path = _plot(report, Path(registry_config.root) / config.scenario.plot, config)
        return report
    finally:
        store.close()
        registry.close()


def _plot(report: DriftScenarioReport, path: Path, config: FedgeConfig) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'fedge[dev]'): no plot")
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    stat = config.drift.policy.statistic
    windows = [r.window for r in report.reports]
    if report.reports:
        for i, feature in enumerate(report.reports[0].features):
            left.plot(windows, [r.overall[stat][i] for r in report.reports], marker="o", label=feature)
    left.axhline(config.drift.policy.threshold, color="red", linestyle="--", label="threshold")
    left.axvline(config.drift.shift_from_window - 0.5, color="grey", linestyle=":", label="shift starts")
    if report.detection_window is not None:
        left.axvline(report.detection_window, color="black", linewidth=2, label="policy fired")
    left.set(title=f"drift per feature ({stat}, all sites)", xlabel="window", ylabel=stat, xticks=windows)
    left.legend(fontsize=7, ncol=2)
    names = [a.version for a in report.accuracies]
    x = np.arange(len(names))
    right.bar(x - 0.2, [a.shifted_accuracy for a in report.accuracies], 0.4, label="shifted clients' data")
    right.bar(x + 0.2, [a.holdout_accuracy for a in report.accuracies], 0.4, label="held-out rows")
    right.set(title="accuracy per version", xticks=x, xticklabels=names, ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
