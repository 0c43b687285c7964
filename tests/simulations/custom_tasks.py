"""Tasks defined outside fedge for the tests: small, generated data, one per way a task can be wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fedge.tasks import Dataset, InputSpec, TargetSpec, Task


def _blobs(n: int = 120, *, seed: int = 0) -> Dataset:
    """Two classes of 4 features, separable by the sign of their sum."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return Dataset(x, (x.sum(1) > 0).astype(np.int64))


class Blobs(Task):
    """A well-formed binary task: 4 named features, 2 classes."""

    name = "blobs"
    input_spec = InputSpec.tabular(("a", "b", "c", "d"))
    target = TargetSpec.binary(("neg", "pos"))

    def build_model(self, config: Any) -> nn.Module:
        return nn.Sequential(nn.Linear(4, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 2))

    def load_dataset(self) -> Dataset:
        return _blobs()


class WrongWidth(Blobs):
    """Declares 2 classes, builds a model with 3 outputs."""

    name = "wrong_width"

    def build_model(self, config: Any) -> nn.Module:
        return nn.Linear(4, 3)


class WrongShape(Blobs):
    """Its model expects 5 features where the input spec declares 4."""

    name = "wrong_shape"

    def build_model(self, config: Any) -> nn.Module:
        return nn.Linear(5, 2)


class LabelOutside(Blobs):
    """Row 7 holds label 2 for a binary target."""

    name = "label_outside"

    def load_dataset(self) -> Dataset:
        data = _blobs()
        y = data.y.copy()
        y[7] = 2
        return Dataset(data.x, y)


class NanTarget(Task):
    """A regression task whose row 3 target is NaN."""

    name = "nan_target"
    input_spec = InputSpec.tabular(("a", "b"))
    target = TargetSpec.regression(("y",))

    def build_model(self, config: Any) -> nn.Module:
        return nn.Linear(2, 1)

    def load_dataset(self) -> Dataset:
        x = np.ones((50, 2), dtype=np.float32)
        y = np.ones((50, 1), dtype=np.float32)
        y[3] = np.nan
        return Dataset(x, y)


class CountingSteps(Blobs):
    """Overrides the training step and the metrics hook, counting calls and penalties seen."""

    name = "counting_steps"

    def __init__(self) -> None:
        self.steps = 0
        self.penalties = 0

    def train_step(self, model, x, y, optimizer, penalty=None):  # type: ignore[no-untyped-def]
        self.steps += 1
        self.penalties += penalty is not None
        return super().train_step(model, x, y, optimizer, penalty)

    def metrics(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return {**super().metrics(outputs, y), "positive-rate": float((outputs.argmax(1) == 1).mean())}


class TinyImages(Task):
    """Tensor examples ``[2, 6, 6]`` and a 3-output regression (mean of each third of the rows)."""

    name = "tiny_images"
    input_spec = InputSpec.tensor((2, 6, 6), value_min=0.0, value_max=1.0)
    target = TargetSpec.regression(("top", "middle", "bottom"))

    def build_model(self, config: Any) -> nn.Module:
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))

    def load_dataset(self) -> Dataset:
        rng = np.random.default_rng(1)
        x = rng.random((90, 2, 6, 6), dtype=np.float32)
        y = np.stack([x[:, :, 2 * i : 2 * i + 2].mean((1, 2, 3)) for i in range(3)], axis=1)
        return Dataset(x, y.astype(np.float32))


def tensor(x: np.ndarray) -> torch.Tensor:
    """float32 tensor of ``x`` (for the tests' forward passes)."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
