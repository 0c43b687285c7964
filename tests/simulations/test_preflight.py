"""``fedge simulate`` refuses, before Flower starts, a task or a split that could never run a round."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedge.config import FedgeConfig, SimulationConfig, TaskConfig
from fedge.errors import ConfigError, TaskDefinitionError
from simulations.runner import check_simulation, primary_metric

CUSTOM = "tests.simulations.custom_tasks"
ROOT = Path(__file__).resolve().parents[2]


def _config(task: str, *, clients: int = 3, partition: str = "iid", alpha: float = 0.5) -> FedgeConfig:
    return FedgeConfig(
        task=TaskConfig(name=task, hidden=8),
        simulation=SimulationConfig(num_clients=clients, partition=partition, alpha=alpha),
    )


@pytest.mark.parametrize("task", ["digits", "wine", "diabetes", "shapes", f"{CUSTOM}:Blobs"])
def test_well_formed_tasks_pass(task: str) -> None:
    config = _config(task)
    if task == "shapes":
        config.task.model = "cnn"

    check_simulation(config)


@pytest.mark.parametrize(
    ("task", "error", "match"),
    [
        (
            "WrongWidth",
            TaskDefinitionError,
            r"task 'wrong_width': the model outputs \[2, 3\] but target declares 2 classes",
        ),
        (
            "WrongShape",
            TaskDefinitionError,
            r"task 'wrong_shape': the model fails on an input of shape \[2, 4\]",
        ),
        (
            "LabelOutside",
            TaskDefinitionError,
            r"task 'label_outside': load_dataset\(\) row 7 has label 2 outside the declared classes 0\.\.1",
        ),
        (
            "NanTarget",
            TaskDefinitionError,
            r"task 'nan_target': load_dataset\(\) row 3 has a NaN or infinite regression target",
        ),
    ],
)
def test_broken_tasks_are_refused_naming_the_task_and_the_field(task: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        check_simulation(_config(f"{CUSTOM}:{task}"))
    assert info.value.exit_code == 2


def test_more_clients_than_the_data_can_feed_is_refused_with_what_fits() -> None:
    with pytest.raises(
        ConfigError,
        match=r"simulation\.num_clients=5000 needs at least 2 rows per client \(10000 rows\), but task "
        r"'digits'.s client pool \(1797 examples less task\.test_fraction=0\.2 held out\) has 1438: "
        r"lower simulation\.num_clients to at most 719",
    ):
        check_simulation(_config("digits", clients=5000))


def test_a_dirichlet_split_that_starves_a_client_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"no Dirichlet\(alpha=0\.001\) split of 96 rows into 40 parts"):
        check_simulation(_config(f"{CUSTOM}:Blobs", clients=40, partition="dirichlet", alpha=0.001))


def test_the_summary_leads_with_accuracy_or_r2() -> None:
    assert primary_metric(_config("wine")) == "accuracy"
    assert primary_metric(_config("diabetes")) == "r2"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["simulation.num_clients=5000"],
            "error [config_invalid]: simulation.num_clients=5000 needs at least 2 rows per client",
        ),
        (
            [f"task={CUSTOM}:WrongWidth"],
            "the model outputs [2, 3] but target declares 2 classes",
        ),
    ],
)
def test_the_command_exits_2_with_one_line_and_registers_nothing(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    root = tmp_path / "reg"
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}

    result = subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "simulate", *overrides, f"registry.root={root}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (root / "registry.db").exists()
