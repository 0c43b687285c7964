"""The public task contract: what a user's task defines so fedge can federate, package and serve it.

A task is a class in the user's own package; fedge finds it by import path
(``task=my_pkg.tasks:ChestXray``) or through the ``fedge.tasks`` entry-point group. A complete
task, 28x28 grey images in two classes::

    import numpy as np
    from torch import nn
    from fedge.tasks import Dataset, DriftSpec, InputSpec, TargetSpec, Task

    class ChestXray(Task):
        name = "chest_xray"
        input_spec = InputSpec.tensor((1, 28, 28), value_min=0.0, value_max=1.0)
        target = TargetSpec.binary(("normal", "pneumonia"))
        drift = DriftSpec(reductions=("channel_mean", "intensity_histogram"))

        def build_model(self, config):
            return nn.Sequential(nn.Flatten(), nn.Linear(784, config.hidden), nn.ReLU(),
                                 nn.Linear(config.hidden, 2))

        def load_dataset(self):
            rng = np.random.default_rng(0)
            x = rng.random((600, 1, 28, 28), dtype=np.float32) * 0.5
            y = rng.integers(0, 2, 600)
            x[y == 1, :, 10:18, 10:18] += 0.5  # a bright patch
            return Dataset(x, y.astype(np.int64))

What fedge derives from it: the loss and the metrics (by ``target.kind``, overridable with
:meth:`Task.loss` and :meth:`Task.metrics`), the ONNX input (``[batch, *input_spec.shape]``, dynamic
batch) and output (``[batch, target.num_outputs]``), input validation on devices, and the drift
features (:class:`DriftSpec`). Preprocessing belongs inside the model (an ``nn.Module`` layer), so
the ONNX file carries it and devices feed raw inputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.tasks.metrics import compute_metrics
from fedge.tasks.spec import DriftSpec, InputSpec, TargetSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


__all__ = ["Dataset", "Task"]


@dataclass(frozen=True)
class Dataset:
    """Examples ``x`` (float32, ``[n, *input_spec.shape]``) and targets ``y``.

    ``y`` is int64 ``[n]`` class indices for classification, float32 ``[n, outputs]`` (or ``[n]`` for
    one output) for regression.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Dataset:
        """Return the examples at ``idx``."""
        return Dataset(self.x[idx], self.y[idx])


class Task(ABC):
    """A learning problem fedge can federate (subclass it in your own package).

    Class attributes
    ----------------
    name : str
        The model name in the registry (``name:3``, ``name@production``).
    input_spec : InputSpec
        One example's shape, names and range.
    target : TargetSpec
        Multiclass, binary or regression, with class or output names.
    drift : DriftSpec
        The per-example values drift monitoring counts (default: the input features themselves).
    models : tuple of str
        The values ``task.model`` accepts (passed to :meth:`build_model` in ``config.model``).
    description : str
        One line for ``fedge tasks list``.
    preprocessing_note : str
        How a device turns raw data into the model's input (shipped in release manifests).
    """

    name: str
    input_spec: InputSpec
    target: TargetSpec
    drift: DriftSpec = DriftSpec()
    models: tuple[str, ...] = ("mlp",)
    description: str = ""
    preprocessing_note: str = "inputs as declared by the input spec; preprocessing is inside the model"

    @abstractmethod
    def build_model(self, config: Any) -> nn.Module:
        """Return a freshly initialised model: ``[batch, *shape]`` float32 -> ``[batch, outputs]``.

        ``config`` is the run's ``TaskConfig`` (``model``, ``hidden`` and the training settings).
        """

    @abstractmethod
    def load_dataset(self) -> Dataset:
        """Return the whole data set simulations partition among their clients.

        Use data that ships with your package or is generated: nothing may be downloaded at run
        time. Institutions' client agents read their own files instead.
        """

    # Hooks with defaults chosen by the target kind.

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss: cross-entropy for classification, mean squared error for regression."""
        from torch.nn import functional

        if self.target.is_classification:
            return functional.cross_entropy(outputs, y)
        return functional.mse_loss(outputs, y.reshape(outputs.shape))

    def train_step(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        penalty: Callable[[], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch; returns ``(loss, outputs)`` (both detached).

        Override for a custom step (several losses, gradient clipping, a scheduler...); keep
        ``penalty`` (FedProx's proximal term, when the strategy sets one) in the loss you minimise.
        """
        outputs = model(x)
        loss = self.loss(outputs, y)
        if penalty is not None:
            loss = loss + penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach(), outputs.detach()

    def metrics(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Metrics of model ``outputs`` against true ``y`` (defaults by ``target.kind``)."""
        return compute_metrics(self.target, outputs, y)

    def split_holdout(self, config: Any) -> tuple[Dataset, Dataset]:
        """Split the data set into a pool for clients and a held-out test set (seeded)."""
        data = self.load_dataset()
        rng = np.random.default_rng(config.data_seed)
        order = rng.permutation(len(data))
        n_test = max(1, round(len(data) * config.test_fraction))
        return data.take(np.sort(order[n_test:])), data.take(np.sort(order[:n_test]))

    def drift_features(self, x: np.ndarray) -> np.ndarray:
        """``[n, *shape]`` examples -> ``[n, features]`` values drift monitoring counts."""
        return self.drift.reduce(x, self.input_spec)

    def drift_feature_names(self) -> tuple[str, ...]:
        """Names of the values :meth:`drift_features` returns."""
        return self.drift.feature_names(self.input_spec)
