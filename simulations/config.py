"""The simulation's config: Hydra composition of the groups in ``configs/``, typed and validated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coordinator import StrategyConfig, validate_strategy_config
from fedge.drift_summary import DriftSettings, validate_drift_settings
from fedge.errors import ConfigError, UnknownStrategyError, UnknownTaskError
from fedge.tasks import NAN_POLICIES, TaskConfig
from fedge.tasks import available_tasks as _available_tasks
from registry import RegistryConfig

__all__ = [
    "CONFIG_DIR",
    "FedgeConfig",
    "ScenarioConfig",
    "SimulationConfig",
    "load_config",
    "validate_config",
]

# configs/ is installed beside the packages (as data), both in a checkout and in site-packages.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class SimulationConfig:
    """Hydra schema of the ``simulation`` group: the local federation's shape."""

    num_clients: int = 5
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 42
    client_cpus: int = 1
    backend_cpus: int = 2
    timeout_s: float = 900.0


@dataclass
class ScenarioConfig:
    """Hydra schema of the ``scenario`` group: ``none`` (one training run) or ``drift``."""

    name: str = "none"
    actor: str = "drift-scenario"
    plot: str = ""


@dataclass
class FedgeConfig:
    """The composed config of ``fedge simulate``."""

    task: TaskConfig = field(default_factory=TaskConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    drift: DriftSettings = field(default_factory=DriftSettings)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    seed: int = 0
    central_evaluation: bool = True
    reason: str = "operator"
    # train (a federation that registers a version) | monitor (drift windows of production)
    mode: str = "train"
    # a version reference (digits@production) whose weights the run starts from; empty: fresh weights
    warm_start_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able)."""
        return asdict(self)


def load_config(
    overrides: list[str] | None = None, *, config_dir: Path | None = None, config_name: str = "config"
) -> FedgeConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides and check it against the schema.

    Raises
    ------
    UnknownTaskError, UnknownStrategyError
        For a group option that does not exist (``task=nope``).
    ConfigError
        For an unknown key, a wrong type, or a value out of range; the message names the key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    folder = config_dir or CONFIG_DIR
    if not (folder / f"{config_name}.yaml").is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown config {config_name!r}: choose one of {', '.join(names)}")
    _check_group_choices(overrides, folder)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3"):
            composed = compose(config_name=config_name, overrides=overrides)
        schema = OmegaConf.structured(FedgeConfig)
        merged = OmegaConf.merge(schema, composed)
        config: FedgeConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except MissingConfigException as exc:
        raise ConfigError(_first_line(str(exc))) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_describe_omegaconf_error(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    validate_config(config)
    return config


def validate_config(config: FedgeConfig) -> None:
    """Check values a schema cannot: names, ranges, and consistency between groups.

    Raises
    ------
    ConfigError
        Naming the offending key and the accepted values.
    """
    if config.task.name not in _available_tasks():
        raise UnknownTaskError(
            f"unknown task {config.task.name!r}: choose one of {', '.join(_available_tasks())}"
        )
    validate_strategy_config(config.strategy)
    validate_drift_settings(config.drift)
    if config.mode not in ("train", "monitor"):
        raise ConfigError(f"mode must be 'train' or 'monitor', got {config.mode!r}")
    if config.scenario.name not in ("none", "drift"):
        raise ConfigError(f"scenario.name must be 'none' or 'drift', got {config.scenario.name!r}")
    sim = config.simulation
    if sim.num_clients < 1:
        raise ConfigError(f"simulation.num_clients must be >= 1, got {sim.num_clients}")
    if sim.partition not in ("iid", "dirichlet"):
        raise ConfigError(f"simulation.partition must be 'iid' or 'dirichlet', got {sim.partition!r}")
    if not sim.alpha > 0:
        raise ConfigError(f"simulation.alpha must be > 0, got {sim.alpha}")
    if sim.client_cpus <= 0 or sim.backend_cpus < 1:
        raise ConfigError("simulation.client_cpus must be > 0 and simulation.backend_cpus >= 1")
    for key in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
        needed = getattr(config.strategy, key)
        if needed > sim.num_clients:
            raise ConfigError(
                f"strategy.{key}={needed} exceeds simulation.num_clients={sim.num_clients}: the "
                f"run would wait forever; lower strategy.{key} or add clients"
            )
    for key in ("local_epochs", "batch_size", "hidden"):
        if getattr(config.task, key) < 1:
            raise ConfigError(f"task.{key} must be >= 1, got {getattr(config.task, key)}")
    if config.task.data.nan_policy not in NAN_POLICIES:
        raise ConfigError(
            f"task.data.nan_policy must be one of {', '.join(NAN_POLICIES)}, "
            f"got {config.task.data.nan_policy!r}"
        )
    if config.task.data.min_rows < 1:
        raise ConfigError(f"task.data.min_rows must be >= 1, got {config.task.data.min_rows}")
    if not config.task.lr > 0:
        raise ConfigError(f"task.lr must be > 0, got {config.task.lr}")
    for key in ("test_fraction", "val_fraction"):
        if not 0.0 < getattr(config.task, key) < 1.0:
            raise ConfigError(f"task.{key} must be in (0, 1), got {getattr(config.task, key)}")


def _check_group_choices(overrides: list[str], config_dir: Path) -> None:
    """Turn ``task=nope`` / ``strategy=nope`` into errors listing the options that exist."""
    errors = {"task": UnknownTaskError, "strategy": UnknownStrategyError}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+~")
        if not sep or "." in key or "/" in key:
            continue
        group_dir = config_dir / key
        if group_dir.is_dir():
            options = sorted(p.stem for p in group_dir.glob("*.yaml"))
            if value not in options:
                error = errors.get(key, ConfigError)
                raise error(f"unknown {key} {value!r}: choose one of {', '.join(options)}")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def _describe_omegaconf_error(exc: Exception) -> str:
    """One line naming the key and the problem, from a Hydra/OmegaConf error."""
    cause = exc.__cause__ or exc.__context__
    full_key = getattr(exc, "full_key", None) or getattr(cause, "full_key", None)
    msg = _first_line(str(cause if cause is not None and not getattr(exc, "full_key", None) else exc))
    if "not in struct" in msg or "not in '" in msg:
        return f"unknown config key {full_key!r}: the schema has no such key (check the spelling)"
    if full_key:
        return f"config key {full_key!r}: {msg}"
    return f"invalid config: {_first_line(str(exc))}"
