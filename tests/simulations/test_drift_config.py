"""The drift config group and the drift scenario compose and validate, with named errors."""

from __future__ import annotations

import pytest

from fedge.errors import ConfigError
from simulations import load_config


def test_the_drift_group_carries_the_default_policy() -> None:
    cfg = load_config([])

    p = cfg.drift.policy
    assert (p.statistic, p.threshold, p.min_features, p.min_site_fraction, p.consecutive_windows) == (
        "psi", 0.2, 2, 0.3, 2,
    )  # fmt: skip
    assert (cfg.drift.mechanism, cfg.drift.epsilon, cfg.scenario.name, cfg.mode) == (
        "laplace",
        1.0,
        "none",
        "train",
    )


def test_the_drift_scenario_shifts_three_of_five_clients() -> None:
    cfg = load_config(["scenario=drift", "drift.shift_size=1.0"])

    assert cfg.scenario.name == "drift" and cfg.scenario.actor == "drift-scenario"
    assert cfg.simulation.num_clients == 5 and len(cfg.drift.shift_clients) == 3
    assert cfg.drift.shift_size == 1.0 and cfg.drift.window_size >= cfg.drift.min_window


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("drift.secure_aggregation=true", "SecAgg"),
        ("drift.mechanism=gaussian", "epsilon and drift.reference_epsilon < 1"),
        ("drift.mechanism=exponential", "drift.mechanism"),
        ("drift.policy.statistic=chi2", "drift.policy.statistic"),
        ("drift.num_bins=1", "drift.num_bins"),
        ("mode=serve", "mode must be"),
    ],
)
def test_bad_drift_settings_are_refused_naming_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config([override])
