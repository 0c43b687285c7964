"""The built-in tasks: ``digits`` (8x8 images, MLP or CNN) and ``breast_cancer`` (tabular MLP)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from fedge.config import TaskConfig
from fedge.errors import ConfigError
from fedge.tasks.api import Dataset, Task
from fedge.tasks.spec import InputSpec, TargetSpec

if TYPE_CHECKING:
    from torch import nn

__all__ = ["BreastCancerTask", "DigitsTask"]


class DigitsTask(Task):
    """scikit-learn's handwritten digits: 64 pixel intensities scaled to [0, 1], 10 classes."""

    name = "digits"
    preprocessing_note = "8x8 grey image, row-major, intensities 0..16 divided by 16"
    models = ("mlp", "cnn")
    description = "scikit-learn digits: 8x8 images as 64 features in [0, 1] -> 10 digits (MLP or CNN)"
    input_spec = InputSpec.tabular(
        tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8)), value_min=0.0, value_max=1.0
    )
    target = TargetSpec.multiclass(tuple(str(d) for d in range(10)))

    def build_model(self, config: TaskConfig) -> nn.Module:
        from fedge.tasks.models import MLP, SmallCNN

        if config.model == "mlp":
            return MLP(self.input_spec.num_features, self.target.num_classes, hidden=config.hidden)
        if config.model == "cnn":
            return SmallCNN(side=8, num_classes=self.target.num_classes, channels=config.hidden // 4)
        raise ConfigError(f"task 'digits' has no model {config.model!r}: choose 'mlp' or 'cnn'")

    def load_dataset(self) -> Dataset:
        x, y = _load_sklearn("digits")
        return Dataset((x / 16.0).astype(np.float32), y)


class BreastCancerTask(Task):
    """scikit-learn's Wisconsin breast cancer table: 30 measurements, 2 classes.

    Standardization constants are part of the task's definition (declared once from the public
    data set, like an image model's channel means), and travel inside the model and its ONNX.
    """

    name = "breast_cancer"
    models = ("mlp",)
    description = "scikit-learn breast cancer: 30 measurements -> malignant/benign (MLP)"
    preprocessing_note = "raw measurements; standardization is inside the model"

    def __init__(self) -> None:
        from sklearn.datasets import load_breast_cancer

        names = tuple(str(n).replace(" ", "_") for n in load_breast_cancer().feature_names)
        self.input_spec = InputSpec.tabular(names, value_min=0.0, value_max=1e5)
        self.target = TargetSpec.binary(("malignant", "benign"))

    def build_model(self, config: TaskConfig) -> nn.Module:
        import torch

        from fedge.tasks.models import MLP, Standardize

        if config.model != "mlp":
            raise ConfigError(f"task 'breast_cancer' has no model {config.model!r}: choose 'mlp'")
        x, _ = _load_sklearn("breast_cancer")
        prep = Standardize(torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0) + 1e-6))
        return MLP(self.input_spec.num_features, 2, hidden=config.hidden, standardize=prep)

    def load_dataset(self) -> Dataset:
        x, y = _load_sklearn("breast_cancer")
        return Dataset(x, y)


@lru_cache(maxsize=4)
def _load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[name]
    bunch = loader()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)
