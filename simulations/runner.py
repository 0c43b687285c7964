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

__all__ = ["SimulationReport", "new_run_id", "simulate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationReport:
    """What a simulation produced: the outcome, the ONNX file and its parity with torch."""

    outcome: RunOutcome
    onnx_path: Path | None
    parity_max_abs_diff: float | None

    @property
    def succeeded(self) -> bool:
        """Whether the run completed and registered a version."""
        return self.outcome.run.status == "completed" and self.outcome.version is not None


def simulate(
    config: FedgeConfig,
    *,
    run_id: str | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
) -> SimulationReport:
    """Run ``config`` as a local simulation on a managed SuperLink and report the result.

    The registry is opened (and created) first, so an unusable registry fails before any
    process starts.
    """
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
        return SimulationReport(outcome=outcome, onnx_path=onnx_path, parity_max_abs_diff=parity)
    finally:
        registry.close()
