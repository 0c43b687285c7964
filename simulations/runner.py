"""``fedge simulate``: one local multi-client federation, end to end, on embedded defaults."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from coordinator import RunOutcome, RunProgress, SimulationBackend, execute_run
from registry import open_registry
from simulations.config import FedgeConfig

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


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-xxxxxx``."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


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
        resolved = config.to_dict()
        resolved["run_id"] = run_id or new_run_id()
        # The ServerApp runs in another process and working directory: pass absolute locations.
        resolved["registry"] = {
            **config.registry.to_dict(),
            "root": str(Path(config.registry.root).expanduser().resolve()),
            "signing_key": str(config.registry.resolved_signing_key()),
            "database_url": config.registry.resolved_database_url()
            if config.registry.resolved_database_url().startswith("sqlite")
            else config.registry.database_url,
            "artifact_uri": config.registry.resolved_artifact_uri(),
        }
        outcome = execute_run(
            registry=registry,
            config=resolved,
            work_dir=Path(resolved["registry"]["root"]) / "runs",
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
