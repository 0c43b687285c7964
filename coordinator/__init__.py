"""The coordinator: Flower ServerApp and strategies, the managed SuperLink, the run lifecycle."""

from coordinator.deployment.control import FlowerControl, FlowerRunState, follow_run_logs
from coordinator.deployment.superlink import ManagedSuperLink
from coordinator.lifecycle import (
    RunOutcome,
    RunProgress,
    SimulationBackend,
    execute_run,
    new_run_id,
    resolve_run_config,
    run_record,
)
from coordinator.strategies import STRATEGIES, available_strategies, validate_strategy_config
from fedge.config import StrategyConfig

__all__ = [
    "STRATEGIES",
    "FlowerControl",
    "FlowerRunState",
    "ManagedSuperLink",
    "RunOutcome",
    "RunProgress",
    "SimulationBackend",
    "StrategyConfig",
    "available_strategies",
    "execute_run",
    "follow_run_logs",
    "new_run_id",
    "resolve_run_config",
    "run_record",
    "validate_strategy_config",
]
