"""Strategy configuration and the allow-list of Flower Message-API strategies fedge builds."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from fedge.errors import ConfigError, UnknownStrategyError

__all__ = ["STRATEGIES", "StrategyConfig", "available_strategies", "strategy_class"]


@dataclass
class StrategyConfig:
    """Hydra schema of the ``strategy`` group.

    Attributes
    ----------
    name : str
        One of :data:`STRATEGIES`.
    num_rounds : int
        Federated rounds to run.
    params : dict
        Keyword arguments of the Flower strategy beyond the common ones (for example
        ``proximal_mu`` for FedProx, ``eta`` for FedAdam); unknown names are refused.
    """

    name: str = "fedavg"
    num_rounds: int = 3
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_nodes: int = 2
    min_evaluate_nodes: int = 2
    min_available_nodes: int = 2
    round_timeout_s: float = 600.0
    params: dict[str, Any] = field(default_factory=dict)


# name -> class name in flwr.serverapp.strategy
STRATEGIES: dict[str, str] = {
    "fedavg": "FedAvg",
    "fedavgm": "FedAvgM",
    "fedprox": "FedProx",
    "fedadam": "FedAdam",
    "fedyogi": "FedYogi",
    "fedadagrad": "FedAdagrad",
    "fedmedian": "FedMedian",
    "fedtrimmedavg": "FedTrimmedAvg",
    "krum": "Krum",
    "multikrum": "MultiKrum",
}

# Set by fedge itself; a config may not override them.
_RESERVED = {
    "weighted_by_key",
    "arrayrecord_key",
    "configrecord_key",
    "train_metrics_aggr_fn",
    "evaluate_metrics_aggr_fn",
}


def available_strategies() -> list[str]:
    """Names accepted in ``strategy.name``."""
    return sorted(STRATEGIES)


def strategy_class(name: str) -> type:
    """Return the Flower strategy class for an allow-listed name.

    Raises
    ------
    UnknownStrategyError
        If ``name`` is not in :data:`STRATEGIES`.
    """
    if name not in STRATEGIES:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}: choose one of {', '.join(available_strategies())}"
        )
    from flwr.serverapp import strategy as flwr_strategy

    cls: type = getattr(flwr_strategy, STRATEGIES[name])
    return cls


def strategy_kwargs(config: StrategyConfig, cls: type) -> dict[str, Any]:
    """The constructor arguments for ``cls`` from ``config``, checked against its signature.

    Raises
    ------
    ConfigError
        If ``params`` names an argument the strategy does not take, or a reserved one.
    """
    accepted = set(inspect.signature(cls).parameters) - {"self"}
    bad = sorted((set(config.params) - accepted) | (set(config.params) & _RESERVED))
    if bad:
        raise ConfigError(
            f"strategy.params {bad} are not accepted by {config.name} ({cls.__name__}); it takes "
            f"{sorted(accepted - _RESERVED)}"
        )
    kwargs: dict[str, Any] = {
        "fraction_train": config.fraction_train,
        "fraction_evaluate": config.fraction_evaluate,
        "min_train_nodes": config.min_train_nodes,
        "min_evaluate_nodes": config.min_evaluate_nodes,
        "min_available_nodes": config.min_available_nodes,
    }
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    kwargs.update(config.params)
    return kwargs


def validate_strategy_config(config: StrategyConfig) -> None:
    """Check names, ranges and params without building anything.

    Raises
    ------
    ConfigError
        Naming the first offending key.
    """
    cls = strategy_class(config.name)
    if config.num_rounds < 1:
        raise ConfigError(f"strategy.num_rounds must be >= 1, got {config.num_rounds}")
    for key in ("fraction_train", "fraction_evaluate"):
        value = getattr(config, key)
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"strategy.{key} must be in (0, 1], got {value}")
    for key in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
        if getattr(config, key) < 1:
            raise ConfigError(f"strategy.{key} must be >= 1, got {getattr(config, key)}")
    strategy_kwargs(config, cls)
