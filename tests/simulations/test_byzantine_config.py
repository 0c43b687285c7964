"""``strategy.validation`` and the byzantine scenario's attack harness: bad values are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedge.config import load_config
from fedge.errors import ConfigError


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "strategy.validation.max_update_norm=-1",
            "strategy.validation.max_update_norm must be a finite number > 0",
        ),
        (
            "strategy.validation.norm_multiple=1",
            "strategy.validation.norm_multiple must be a finite number > 1",
        ),
        (
            "strategy.validation.norm_multiple=0.5",
            "strategy.validation.norm_multiple must be a finite number > 1",
        ),
        (
            "strategy.validation.max_num_examples=0",
            "strategy.validation.max_num_examples must be an integer in [1, 2^53-1]",
        ),
        (
            "strategy.validation.num_examples_multiple=1",
            "strategy.validation.num_examples_multiple must be a finite number > 1",
        ),
        # outside scenario=byzantine the harness keys are not in the scenario's schema at all ...
        ("scenario.attack=random", "unknown config key 'scenario.attack'"),
        # ... and forced in with Hydra's +, the config still refuses them
        (
            "+scenario.attack=random",
            "scenario.attack and scenario.attackers are a test harness for scenario=byzantine only",
        ),
        ("+scenario.attackers=[0]", "are a test harness for scenario=byzantine only"),
    ],
)
def test_bad_validation_or_attack_config_is_one_line_and_exit_2(override: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "simulate", override],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_attackers_must_be_partitions_and_validation_can_be_turned_off() -> None:
    with pytest.raises(ConfigError, match=r"scenario.attackers \[12\] are not partitions"):
        load_config(["scenario=byzantine", "scenario.attackers=[0,12]"])
    with pytest.raises(
        ConfigError, match=r"scenario.attacks\[0\] must be one of none, sign-flip, scale, random"
    ):
        load_config(["scenario=byzantine", "scenario.attacks=[flood]"])
    config = load_config(["strategy.validation.norm_multiple=null", "strategy.validation.enabled=false"])
    assert config.strategy.validation.norm_multiple is None and not config.strategy.validation.enabled
    assert load_config(["scenario=byzantine"]).simulation.num_clients == 10
