"""Local training and evaluation loops shared by every classification task."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedge.tasks.api import Dataset

__all__ = ["EvalResult", "TrainResult", "evaluate_model", "predict_logits", "train_model"]


@dataclass(frozen=True)
class TrainResult:
    """Mean training loss and accuracy over the last local epoch, and the rows seen."""

    loss: float
    accuracy: float
    num_examples: int


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy loss and accuracy on a data set."""

    loss: float
    accuracy: float
    num_examples: int


def train_model(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float = 0.9,
    seed: int = 0,
    proximal_mu: float = 0.0,
    device: str = "cpu",
) -> TrainResult:
    """Train ``model`` in place with SGD on ``data``.

    With ``proximal_mu > 0`` the FedProx term ``mu/2 * ||w - w_global||^2`` is added, ``w_global``
    being the weights the model held when the call started.
    """
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    global_params = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    loss_fn = nn.CrossEntropyLoss()
    loss_sum, correct, seen = 0.0, 0, 0
    for _ in range(max(1, epochs)):
        loss_sum, correct, seen = 0.0, 0, 0
        order = torch.randperm(len(y), generator=generator).to(device)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            logits = model(x[idx])
            loss = loss_fn(logits, y[idx])
            if proximal_mu > 0:
                prox = sum(
                    ((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params, strict=True)
                )
                loss = loss + 0.5 * proximal_mu * prox
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
            seen += len(idx)
    return TrainResult(loss=loss_sum / max(seen, 1), accuracy=correct / max(seen, 1), num_examples=len(y))


@torch.no_grad()
def evaluate_model(model: nn.Module, data: Dataset, *, device: str = "cpu") -> EvalResult:
    """Return loss and accuracy of ``model`` on ``data`` (no gradient, eval mode)."""
    model.to(device).eval()
    logits = model(torch.from_numpy(data.x).to(device))
    y = torch.from_numpy(data.y).to(device)
    loss = float(nn.functional.cross_entropy(logits, y))
    acc = float((logits.argmax(1) == y).float().mean())
    return EvalResult(loss=loss, accuracy=acc, num_examples=len(data))


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Return the model's float32 logits for rows ``x`` as NumPy (eval mode, CPU)."""
    model.cpu().eval()
    return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load ``state_dict`` into ``model`` strictly, naming missing and unexpected keys on failure."""
    from fedge.serde import check_state_dict_compatible

    check_state_dict_compatible(model.state_dict(), state_dict)
    model.load_state_dict(dict(state_dict), strict=True)
    return model
