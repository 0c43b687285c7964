"""Built-in tabular examples beyond the toys: ``wine`` (3 classes) and ``diabetes`` (regression).

Both read data that ships with scikit-learn. Standardization constants are part of the task's
definition and live inside the model (so its ONNX file carries them); ``diabetes`` also maps its
standardized output back to the target's units inside the model, and trains on the standardized
error (the :meth:`~fedge.tasks.Task.loss` hook) so the learning rate does not depend on the units.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.errors import ConfigError
from fedge.tasks.api import Dataset, Task
from fedge.tasks.spec import InputSpec, TargetSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DiabetesTask", "WineTask"]


@lru_cache(maxsize=2)
def _load(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn import datasets

    bunch = {"wine": datasets.load_wine, "diabetes": datasets.load_diabetes}[name]()
    names = tuple(str(n).replace(" ", "_").replace("/", "_") for n in bunch.feature_names)
    return bunch.data.astype(np.float32), bunch.target, names


class WineTask(Task):
    """scikit-learn's wine recognition table: 13 chemical measurements, 3 cultivars."""

    name = "wine"
    models = ("mlp",)
    description = "scikit-learn wine: 13 measurements -> 3 cultivars (MLP, standardization inside)"
    preprocessing_note = "raw measurements in the declared feature order; standardization is inside the model"

    def __init__(self) -> None:
        x, _, names = _load("wine")
        self.input_spec = InputSpec.tabular(names, value_min=0.0, value_max=float(x.max()) * 10)
        self.target = TargetSpec.multiclass(("class_0", "class_1", "class_2"))

    def build_model(self, config: Any) -> nn.Module:
        import torch

        from fedge.tasks.models import MLP, Standardize

        if config.model != "mlp":
            raise ConfigError(f"task 'wine' has no model {config.model!r}: choose 'mlp'")
        x, _, _ = _load("wine")
        prep = Standardize(torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0) + 1e-6))
        return MLP(self.input_spec.num_features, 3, hidden=config.hidden, standardize=prep)

    def load_dataset(self) -> Dataset:
        x, y, _ = _load("wine")
        return Dataset(x, y.astype(np.int64))


class DiabetesTask(Task):
    """scikit-learn's diabetes table: 10 baseline measurements -> disease progression after a year."""

    name = "diabetes"
    models = ("mlp",)
    description = "scikit-learn diabetes: 10 measurements -> progression (regression, MLP)"
    preprocessing_note = "sklearn's scaled measurements; the output is in the target's own units"

    def __init__(self) -> None:
        _, y, names = _load("diabetes")
        self.input_spec = InputSpec.tabular(names, value_min=-1.0, value_max=1.0)
        self.target = TargetSpec.regression(("progression",))
        self._y_mean = float(np.mean(y))
        self._y_std = float(np.std(y))

    def build_model(self, config: Any) -> nn.Module:
        import torch
        from torch import nn

        from fedge.tasks.models import MLP, Rescale, Standardize

        if config.model != "mlp":
            raise ConfigError(f"task 'diabetes' has no model {config.model!r}: choose 'mlp'")
        x, _, _ = _load("diabetes")
        prep = Standardize(torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0) + 1e-6))
        out = Rescale(torch.tensor([self._y_mean]), torch.tensor([self._y_std]))
        return nn.Sequential(
            MLP(self.input_spec.num_features, 1, hidden=config.hidden, standardize=prep), out
        )

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error in standard deviations of the target (units-free gradients)."""
        from torch.nn import functional

        return functional.mse_loss(outputs / self._y_std, y.reshape(outputs.shape) / self._y_std)

    def load_dataset(self) -> Dataset:
        x, y, _ = _load("diabetes")
        return Dataset(x, y.astype(np.float32).reshape(-1, 1))
