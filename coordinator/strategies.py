"""The allow-list of Flower Message-API strategies fedge builds, and their arguments from the config."""

from __future__ import annotations

import inspect
from typing import Any

from fedge.config import StrategyConfig, validate_strategy
from fedge.errors import ConfigError, UnknownStrategyError

__all__ = [
    "STRATEGIES",
    "available_strategies",
    "strategy_class",
    "strategy_kwargs",
    "validate_strategy_config",
]


# name -> class name in flwr.serverapp.strategy (the names are fedge.config.STRATEGY_NAMES)
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
    "bulyan": "Bulyan",
}

# Set by fedge itself; a config may not override them.
_RESERVED = {
    "weighted_by_key",
    "arrayrecord_key",
    "configrecord_key",
    "train_metrics_aggr_fn",
    "evaluate_metrics_aggr_fn",
    "selection_rule",
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
    """Check names and ranges (as the config does) and ``params`` against the Flower strategy.

    Raises
    ------
    UnknownStrategyError
        For a name not in :data:`STRATEGIES`.
    ConfigError
        Naming the first offending key.
    """
    validate_strategy(config)
    strategy_kwargs(config, strategy_class(config.name))
