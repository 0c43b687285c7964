"""A client's own data: in simulation, its seeded partition of the task's public data set."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedge.partition import partition_indices
from fedge.tasks import Dataset, TaskConfig, get_task

__all__ = ["LocalData", "load_simulation_partition"]


@dataclass(frozen=True)
class LocalData:
    """What one client trains and evaluates on; it never leaves the client."""

    train: Dataset
    val: Dataset


@lru_cache(maxsize=8)
def _pool(task_name: str, test_fraction: float, data_seed: int) -> Dataset:
    task = get_task(task_name)
    pool, _ = task.split_holdout(TaskConfig(name=task_name, test_fraction=test_fraction, data_seed=data_seed))
    return pool


def load_simulation_partition(
    *,
    task: TaskConfig,
    partition_id: int,
    num_partitions: int,
    scheme: str,
    alpha: float,
    seed: int,
) -> LocalData:
    """Return partition ``partition_id`` of the task's client pool, split into train and val.

    The split is a pure function of its arguments, so every process computes the same parts.
    """
    pool = _pool(task.name, task.test_fraction, task.data_seed)
    parts = partition_indices(pool.y, num_partitions, scheme=scheme, alpha=alpha, seed=seed)
    mine = pool.take(parts[partition_id])
    order = np.random.default_rng(seed + 1000 + partition_id).permutation(len(mine))
    n_val = round(len(mine) * task.val_fraction) if len(mine) >= 5 else 0
    return LocalData(train=mine.take(np.sort(order[n_val:])), val=mine.take(np.sort(order[:n_val])))
