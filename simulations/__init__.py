"""Local multi-client scenarios on the same code path as deployment (never imported by services)."""

from fedge.config import CONFIG_DIR, FedgeConfig, SimulationConfig, load_config, validate_config
from simulations.runner import SimulationReport, new_run_id, simulate

__all__ = [
    "CONFIG_DIR",
    "FedgeConfig",
    "SimulationConfig",
    "SimulationReport",
    "load_config",
    "new_run_id",
    "simulate",
    "validate_config",
]
