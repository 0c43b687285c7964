"""Run-config reading shared by the bare ServerApp and ClientApp."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedge.tasks import TaskConfig


def task_config(run_config: Mapping[str, Any]) -> TaskConfig:
    """The fedge task config (model and local training settings) from the flat run config."""
    return TaskConfig(
        name=str(run_config["task"]),
        model=str(run_config["model"]),
        hidden=int(run_config["hidden"]),
        local_epochs=int(run_config["local-epochs"]),
        batch_size=int(run_config["batch-size"]),
        lr=float(run_config["lr"]),
        momentum=float(run_config["momentum"]),
        test_fraction=float(run_config["test-fraction"]),
        val_fraction=float(run_config["val-fraction"]),
        data_seed=int(run_config["data-seed"]),
    )
