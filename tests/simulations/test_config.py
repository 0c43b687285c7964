"""Hydra composition of the simulation config, with typed, named errors."""

from __future__ import annotations

import pytest

from coordinator import resolve_run_config
from fedge.errors import ConfigError, UnknownStrategyError, UnknownTaskError
from simulations import load_config


def test_defaults_compose_to_digits_fedavg_five_clients_on_local_sqlite() -> None:
    cfg = load_config([])

    assert (cfg.task.name, cfg.strategy.name, cfg.simulation.num_clients) == ("digits", "fedavg", 5)
    assert cfg.registry.root == ".fedge" and cfg.registry.resolved_database_url().startswith("sqlite:///")


def test_group_choice_and_value_overrides() -> None:
    cfg = load_config(
        ["strategy=fedprox", "simulation.num_clients=10", "task=breast_cancer", "task.hidden=8"]
    )

    assert cfg.strategy.name == "fedprox" and cfg.strategy.params == {"proximal_mu": 0.01}
    assert cfg.simulation.num_clients == 10
    assert (cfg.task.name, cfg.task.hidden) == ("breast_cancer", 8)


def test_extra_strategy_params_are_checked_against_the_strategy() -> None:
    cfg = load_config(["strategy=fedadam", "strategy.params.eta=0.5"])
    assert cfg.strategy.params["eta"] == 0.5

    # The config holds the strategy's name; its Flower signature is checked where a run is resolved,
    # before the run is recorded.
    bogus = load_config(["strategy=fedadam", "+strategy.params.bogus=1"])
    with pytest.raises(ConfigError, match=r"\['bogus'\] are not accepted by fedadam"):
        resolve_run_config(bogus, bogus.registry, "run-1")


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (
            ["task=mnist"],
            UnknownTaskError,
            "unknown task 'mnist': choose one of breast_cancer, diabetes, digits, shapes, wine",
        ),
        (["strategy=fedsgd"], UnknownStrategyError, "unknown strategy 'fedsgd': choose one of"),
        (["task.name=mnist"], UnknownTaskError, "unknown task 'mnist'"),
        (["simulation.num_clients=-3"], ConfigError, "simulation.num_clients must be >= 1, got -3"),
        (
            ["simulation.num_clients=many"],
            ConfigError,
            "'simulation.num_clients'.*could not be converted",
        ),
        (["simulation.clients=3"], ConfigError, "unknown config key 'simulation.clients'"),
        (["+simulation.clients=3"], ConfigError, "unknown config key 'simulation.clients'"),
        (
            ["simulation.partition=zipf"],
            ConfigError,
            "simulation.partition must be 'iid' or 'dirichlet'",
        ),
        (
            ["simulation.num_clients=1"],
            ConfigError,
            "strategy.min_train_nodes=2 exceeds simulation.num_clients=1",
        ),
        (["task.lr=0"], ConfigError, "task.lr must be > 0"),
    ],
)
def test_bad_overrides_name_the_problem(overrides: list[str], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load_config(overrides)
