"""``fedge simulate``: one local multi-client federation, end to end, on embedded defaults."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coordinator import (
    RunOutcome,
    RunProgress,
    SimulationBackend,
    execute_run,
    new_run_id,
    resolve_run_config,
)
from fedge.config import FedgeConfig
from registry import open_registry

__all__ = ["SimulationReport", "check_simulation", "new_run_id", "simulate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationReport:
    """What a simulation produced: the outcome, the ONNX file and its parity with torch.

    ``primary_metric`` is the task's lead metric (``accuracy`` or ``r2``), the one tables show.
    """

    outcome: RunOutcome
    onnx_path: Path | None
    parity_max_abs_diff: float | None
    primary_metric: str = "accuracy"

    @property
    def succeeded(self) -> bool:
        """Whether the run completed and registered a version."""
        return self.outcome.run.status == "completed" and self.outcome.version is not None


def check_simulation(config: FedgeConfig) -> None:
    """Refuse, before any process starts, a simulation that could never run a round.

    Checks the task's data set against its specs, that the client pool can be split among
    ``simulation.num_clients`` clients (with the configured scheme), and that the model's output
    on 2 examples has the target's width and can be traced for ONNX export.

    Raises
    ------
    ConfigError
        A split that cannot be made (naming ``simulation.num_clients`` and what fits).
    TaskDefinitionError
        Data or a model that breaks the task's declaration (naming the task and the field).
    """
    from fedge.partition import check_split, partition_indices
    from fedge.tasks import BUILTIN_TASKS, check_dataset, get_task
    from fedge.tasks.training import check_model_output
    from registry import check_exportable

    task_cfg, sim = config.task, config.simulation
    task = get_task(task_cfg.name)
    data = task.load_dataset()
    check_dataset(task, data, where="load_dataset()")
    pool, _ = task.split_holdout(task_cfg)
    check_split(
        len(pool),
        sim.num_clients,
        what=f"task {task.name!r}'s client pool ({len(data)} examples less "
        f"task.test_fraction={task_cfg.test_fraction} held out)",
    )
    partition_indices(pool.y, sim.num_clients, scheme=sim.partition, alpha=sim.alpha, seed=sim.seed)
    check_model_output(task, task_cfg, pool.x)
    if task_cfg.name not in BUILTIN_TASKS:
        # 2 s of tracing per run: the built-in tasks are exported by the test suite instead.
        check_exportable(task.build_model(task_cfg), task.input_spec.shape, task=task.name)


def primary_metric(config: FedgeConfig) -> str:
    """The lead metric of the config's task: ``accuracy`` (classification) or ``r2`` (regression)."""
    from fedge.tasks import get_task

    return get_task(config.task.name).target.primary_metric


def simulate(
    config: FedgeConfig,
    *,
    run_id: str | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
) -> SimulationReport:
    """Run ``config`` as a local simulation on a managed SuperLink and report the result.

    The task and the split are checked first (:func:`check_simulation`), then the registry is
    opened (and created), so a bad task or an unusable registry fails before any process starts
    and nothing is recorded.
    """
    check_simulation(config)
    registry = open_registry(config.registry)
    try:
        resolved = resolve_run_config(config, config.registry, run_id or new_run_id())
        outcome = execute_run(
            registry=registry,
            config=resolved,
            work_dir=Path(resolved.registry.root) / "runs",
            simulation=SimulationBackend(
                num_supernodes=config.simulation.num_clients,
                client_cpus=config.simulation.client_cpus,
                client_gpus=config.simulation.client_gpus,
                backend_cpus=config.simulation.backend_cpus,
            ),
            timeout_s=config.simulation.timeout_s,
            on_progress=on_progress,
        )
        onnx_path: Path | None = None
        parity: float | None = None
        if outcome.version is not None:
            ref = outcome.version.artifact("onnx")
            onnx_path = registry.artifacts.local_path(ref.sha256) if ref else None
            parity = outcome.version.metrics.get("onnx-parity-max-abs-diff")
        return SimulationReport(
            outcome=outcome,
            onnx_path=onnx_path,
            parity_max_abs_diff=parity,
            primary_metric=primary_metric(config),
        )
    finally:
        registry.close()
