"""The strategy allow-list and parameter checks."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedAvg, FedProx

from coordinator import StrategyConfig, available_strategies, validate_strategy_config
from coordinator.strategies import strategy_class, strategy_kwargs
from fedge.errors import ConfigError, UnknownStrategyError


@pytest.mark.parametrize("name", available_strategies())
def test_every_allowed_strategy_builds_from_its_default_config(name: str) -> None:
    cls = strategy_class(name)

    strategy = cls(**strategy_kwargs(StrategyConfig(name=name), cls))

    assert strategy.min_available_nodes == 2


def test_fedprox_receives_its_proximal_mu() -> None:
    cfg = StrategyConfig(name="fedprox", params={"proximal_mu": 0.3})

    strategy = FedProx(**strategy_kwargs(cfg, FedProx))

    assert strategy.proximal_mu == 0.3


def test_unknown_strategy_is_refused_with_the_choices() -> None:
    with pytest.raises(
        UnknownStrategyError, match="unknown strategy 'fedsgd': choose one of bulyan, fedadagrad, fedadam"
    ) as info:
        validate_strategy_config(StrategyConfig(name="fedsgd"))
    assert info.value.code == "unknown_strategy"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (
            StrategyConfig(params={"eta": 0.1}),
            r"strategy.params \['eta'\] are not accepted by fedavg",
        ),
        (StrategyConfig(params={"weighted_by_key": "x"}), r"\['weighted_by_key'\]"),
        (StrategyConfig(num_rounds=0), "strategy.num_rounds must be >= 1, got 0"),
        (StrategyConfig(fraction_train=1.5), r"strategy.fraction_train must be in \(0, 1\]"),
        (StrategyConfig(min_available_nodes=0), "strategy.min_available_nodes must be >= 1"),
    ],
)
def test_bad_strategy_config_names_the_key(config: StrategyConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_strategy_config(config)


def test_common_settings_reach_the_strategy() -> None:
    cfg = StrategyConfig(fraction_train=0.5, min_train_nodes=3, min_available_nodes=4)

    strategy = FedAvg(**strategy_kwargs(cfg, FedAvg))

    assert (strategy.fraction_train, strategy.min_train_nodes, strategy.min_available_nodes) == (
        0.5,
        3,
        4,
    )
