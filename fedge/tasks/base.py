"""The task abstraction: what a federation learns (model factory, data schema, data source)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from fedge.config import TaskConfig

__all__ = ["DataSchema", "Dataset", "Task"]


@dataclass(frozen=True)
class DataSchema:
    """The rows a task's model takes: flat float32 features, integer class labels.

    Attributes
    ----------
    feature_names : tuple of str
        One name per feature column, in model input order.
    num_classes : int
        Number of classes; the model outputs one logit per class.
    value_min, value_max : float
        The range every feature must lie in (inclusive) after the task's own reading.
    """

    feature_names: tuple[str, ...]
    num_classes: int
    value_min: float = -np.inf
    value_max: float = np.inf
    input_name: str = "x"
    output_name: str = "logits"
    class_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_features(self) -> int:
        """Width of one input row."""
        return len(self.feature_names)


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (float32, [n, num_features]) and labels ``y`` (int64, [n])."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Dataset:
        """Return the rows at ``idx``."""
        return Dataset(self.x[idx], self.y[idx])


class Task(ABC):
    """A learning problem fedge can federate.

    Subclasses declare a :class:`DataSchema`, build the model, and load the public data set
    used by simulations (an institution's client agent reads its own files instead).
    """

    name: str
    schema: DataSchema
    # How raw inputs become the model's features (shipped in release manifests for devices).
    preprocessing_note: str = "features as declared by the schema, in order"

    @abstractmethod
    def build_model(self, config: TaskConfig) -> nn.Module:
        """Return a freshly initialised model taking ``[batch, num_features]`` float32 rows."""

    @abstractmethod
    def load_dataset(self) -> Dataset:
        """Return the whole public data set this task simulates with."""

    def split_holdout(self, config: TaskConfig) -> tuple[Dataset, Dataset]:
        """Split the data set into a pool for clients and a held-out test set (seeded)."""
        data = self.load_dataset()
        rng = np.random.default_rng(config.data_seed)
        order = rng.permutation(len(data))
        n_test = max(1, round(len(data) * config.test_fraction))
        return data.take(np.sort(order[n_test:])), data.take(np.sort(order[:n_test]))
