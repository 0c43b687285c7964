"""Local training, evaluation and prediction for any task: N-d inputs, any target kind, the task's hooks.

The loss, the optimisation step and the metrics come from the task (:meth:`Task.loss`,
:meth:`Task.train_step`, :meth:`Task.metrics`, whose defaults follow ``target.kind``), so a
regression or image task trains through the same loop as the built-in classifiers. A model may
train on CUDA (``task.device``); it is moved back to the CPU before anyone reads its weights, so
the state dict and the ONNX export look the same whatever the device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fedge.errors import ConfigError, TaskDefinitionError
from fedge.tasks.api import Dataset, Task
from fedge.tasks.metrics import compute_metrics
from fedge.tasks.spec import TargetSpec

__all__ = [
    "EvalResult",
    "TrainResult",
    "check_model_output",
    "evaluate_model",
    "load_weights",
    "predict_outputs",
    "resolve_device",
    "train_model",
]

# Rows per forward pass outside training: bounds memory for image tasks on small GPUs.
EVAL_BATCH = 1024


@dataclass(frozen=True)
class TrainResult:
    """Mean training loss and the task's metrics over the last local epoch, and the examples seen."""

    loss: float
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """The ``accuracy`` metric (NaN for a target without one, such as regression)."""
        return self.metrics.get("accuracy", float("nan"))


@dataclass(frozen=True)
class EvalResult:
    """The task's loss and metrics on a data set."""

    loss: float
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """The ``accuracy`` metric (NaN for a target without one, such as regression)."""
        return self.metrics.get("accuracy", float("nan"))


def resolve_device(setting: str) -> torch.device:
    """``task.device`` -> a torch device: ``auto`` is CUDA when this process sees a GPU, else CPU.

    Raises
    ------
    ConfigError
        For ``cuda`` on a machine (or Ray actor) without a visible GPU, or an unknown setting.
    """
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "task.device=cuda but this process sees no CUDA GPU: use task.device=auto (CPU "
                "fallback) or give simulated clients a GPU share with simulation.client_gpus"
            )
        return torch.device("cuda")
    raise ConfigError(f"task.device must be auto, cpu or cuda, got {setting!r}")


def train_model(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    task: Task | None = None,
    momentum: float = 0.9,
    seed: int = 0,
    proximal_mu: float = 0.0,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train ``model`` in place with SGD on ``data`` through the task's ``train_step`` hook.

    With ``proximal_mu > 0`` the FedProx term ``mu/2 * ||w - w_global||^2`` (``w_global`` being
    the weights the model held when the call started) is passed to the step as its ``penalty``.
    Without a ``task``, integer targets train as classification and float targets as regression.
    The model is back on the CPU when the call returns.
    """
    task = task if task is not None else _inferred_task(data)
    dev = torch.device(device)
    model.to(dev).train()
    generator = torch.Generator().manual_seed(seed)
    x, y = _tensors(data, dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    penalty = _proximal_penalty(model, proximal_mu)
    loss_sum, seen, outputs = torch.zeros((), device=dev), 0, []
    epochs = max(1, epochs)
    try:
        for epoch in range(epochs):
            # Only the last epoch's loss and outputs are reported; the sum stays a tensor so that
            # a batch costs no device synchronisation (the step itself is the whole cost).
            last = epoch == epochs - 1
            loss_sum, seen, outputs = torch.zeros((), device=dev), 0, []
            order = torch.randperm(len(y), generator=generator).to(dev)
            for start in range(0, len(y), batch_size):
                idx = order[start : start + batch_size]
                loss, out = task.train_step(model, x[idx], y[idx], opt, penalty)
                if last:
                    loss_sum += loss * len(idx)
                    seen += len(idx)
                    outputs.append((idx, out))
    finally:
        model.cpu()
    outputs = [(idx.cpu(), out.float().cpu()) for idx, out in outputs]
    metrics = task.metrics(*_in_order(outputs, data)) if outputs else {}
    mean_loss = float(loss_sum) / max(seen, 1)
    return TrainResult(loss=mean_loss, num_examples=len(y), metrics=_floats(metrics))


@torch.no_grad()
def evaluate_model(
    model: nn.Module, data: Dataset, *, task: Task | None = None, device: str | torch.device = "cpu"
) -> EvalResult:
    """Return the task's loss and metrics of ``model`` on ``data`` (no gradient, eval mode)."""
    task = task if task is not None else _inferred_task(data)
    dev = torch.device(device)
    model.to(dev).eval()
    loss_sum, chunks = 0.0, []
    try:
        for start in range(0, len(data), EVAL_BATCH):
            part = data.take(np.arange(start, min(start + EVAL_BATCH, len(data))))
            x, y = _tensors(part, dev)
            out = model(x)
            loss_sum += float(task.loss(out, y)) * len(part)
            chunks.append(out.float().cpu().numpy())
    finally:
        model.cpu()
    if not chunks:
        return EvalResult(loss=float("nan"), num_examples=0)
    metrics = task.metrics(np.concatenate(chunks), np.asarray(data.y))
    return EvalResult(loss=loss_sum / len(data), num_examples=len(data), metrics=_floats(metrics))


@torch.no_grad()
def predict_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's float32 outputs ``[n, outputs]`` for examples ``x`` ``[n, *shape]`` (eval mode, CPU)."""
    model.cpu().eval()
    rows = np.ascontiguousarray(x, dtype=np.float32)
    parts = [
        model(torch.from_numpy(rows[s : s + EVAL_BATCH])).float() for s in range(0, len(rows), EVAL_BATCH)
    ]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    out = torch.cat(parts).numpy()
    return out.reshape(len(rows), -1).astype(np.float32, copy=False)


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load ``state_dict`` into ``model`` strictly, naming missing and unexpected keys on failure."""
    from fedge.serde import check_state_dict_compatible

    check_state_dict_compatible(model.state_dict(), state_dict)
    model.load_state_dict(dict(state_dict), strict=True)
    return model


@torch.no_grad()
def check_model_output(task: Task, config: Any, examples: np.ndarray | None = None) -> None:
    """Build the task's model and check that 2 examples give outputs ``[2, target.num_outputs]``.

    ``examples`` are real inputs (the first 2 are used); without them, zeros of the declared shape.

    Raises
    ------
    TaskDefinitionError
        Naming the task, what the model returned and what the target declares.
    """
    shape = [2, *task.input_spec.shape]
    if examples is not None and len(examples) >= 2:
        x = torch.from_numpy(np.ascontiguousarray(examples[:2], dtype=np.float32))
    else:
        x = torch.zeros(shape)
    try:
        model = task.build_model(config)
        model.eval()
        out = model(x)
    except ConfigError:
        raise
    except Exception as exc:  # the user's model code: name it and what it was fed
        raise TaskDefinitionError(
            f"task {task.name!r}: the model fails on an input of shape {shape}: {type(exc).__name__}: "
            f"{exc}; build_model must return a module that takes [batch, *input_spec.shape] float32"
        ) from exc
    target = task.target
    want = [2, target.num_outputs]
    got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != want:
        declared = (
            f"{target.num_outputs} classes" if target.is_classification else f"{target.num_outputs} outputs"
        )
        raise TaskDefinitionError(
            f"task {task.name!r}: the model outputs {got} but target declares {declared}: make "
            f"build_model end in a layer of width {target.num_outputs} (or fix target)"
        )


def _tensors(data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32)).to(device)
    y_np = np.asarray(data.y)
    y_np = y_np.astype(np.int64) if np.issubdtype(y_np.dtype, np.integer) else y_np.astype(np.float32)
    return x, torch.from_numpy(np.ascontiguousarray(y_np)).to(device)


def _in_order(
    outputs: list[tuple[torch.Tensor, torch.Tensor]], data: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """The last epoch's outputs (gathered in shuffled batches) with the targets in the same order."""
    idx = torch.cat([i for i, _ in outputs]).numpy()
    out = torch.cat([o for _, o in outputs]).numpy()
    return out, np.asarray(data.y)[idx]


def _proximal_penalty(model: nn.Module, mu: float) -> Callable[[], torch.Tensor] | None:
    if mu <= 0:
        return None
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]

    def penalty() -> torch.Tensor:
        total = sum(((p - g) ** 2).sum() for p, g in zip(params, start, strict=True))
        return 0.5 * mu * total  # type: ignore[return-value]

    return penalty


def _floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in metrics.items()}


class _InferredTask(Task):
    """Loss and metrics for callers without a task: integer targets are classes, floats regression."""

    name = "inferred"
    models = ()

    def __init__(self, target: TargetSpec) -> None:
        self.target = target

    def build_model(self, config: Any) -> nn.Module:  # pragma: no cover - never built
        raise NotImplementedError

    def load_dataset(self) -> Dataset:  # pragma: no cover - never loaded
        raise NotImplementedError

    def metrics(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        if self.target.is_classification:
            width = max(outputs.shape[1], int(np.max(y, initial=0)) + 1)
            self.target = TargetSpec.multiclass(tuple(str(c) for c in range(max(width, 2))))
        return compute_metrics(self.target, outputs, y)


def _inferred_task(data: Dataset) -> Task:
    if np.issubdtype(np.asarray(data.y).dtype, np.integer):
        return _InferredTask(TargetSpec.multiclass(("0", "1")))
    width = 1 if np.asarray(data.y).ndim == 1 else int(np.asarray(data.y).shape[1])
    return _InferredTask(TargetSpec.regression(tuple(f"y{i}" for i in range(width))))
