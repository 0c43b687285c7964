"""Metrics by target kind, as pure NumPy functions over a model's outputs and the true targets.

Classification: ``accuracy``, ``macro-f1`` and, for binary targets, ``auroc`` (from the softmax score
of the second class). Regression: ``mse``, ``mae`` and ``r2`` (averaged over outputs). A task may add
or replace metrics with its own ``metrics`` hook; these are the defaults.
"""

from __future__ import annotations

import numpy as np

from fedge.tasks.spec import TargetSpec

__all__ = [
    "accuracy",
    "auroc",
    "compute_metrics",
    "macro_f1",
    "mean_absolute_error",
    "mean_squared_error",
    "r2_score",
    "softmax",
]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[n, classes]`` logits (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of predicted labels equal to the true ones (0 for no rows)."""
    labels = np.asarray(labels)
    return float(np.mean(labels == np.asarray(predicted))) if len(labels) else 0.0


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 scores, over the classes present in either array."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    scores = []
    for c in range(num_classes):
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        if tp + fp + fn == 0:
            continue  # the class is absent from both: no evidence either way
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the positive label 1 (ties count half).

    Returns NaN when only one class is present (the area is undefined).
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties (Mann-Whitney U).
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def mean_squared_error(y: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of the squared errors over every output."""
    return float(np.mean((_as_2d(predicted) - _as_2d(y)) ** 2))


def mean_absolute_error(y: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of the absolute errors over every output."""
    return float(np.mean(np.abs(_as_2d(predicted) - _as_2d(y))))


def r2_score(y: np.ndarray, predicted: np.ndarray) -> float:
    """Coefficient of determination, averaged over outputs (1 is perfect, 0 predicts the mean)."""
    y2, p2 = _as_2d(y), _as_2d(predicted)
    residual = np.sum((y2 - p2) ** 2, axis=0)
    total = np.sum((y2 - y2.mean(axis=0)) ** 2, axis=0)
    per_output = np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0), 0.0)
    return float(np.mean(per_output))


def compute_metrics(target: TargetSpec, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The default metrics of ``target``'s kind for model ``outputs`` against true ``y``."""
    outputs = np.asarray(outputs)
    if target.is_classification:
        predicted = outputs.argmax(axis=1)
        out = {
            "accuracy": accuracy(y, predicted),
            "macro-f1": macro_f1(y, predicted, target.num_classes),
        }
        if target.kind == "binary":
            value = auroc(y, softmax(outputs)[:, 1])
            if np.isfinite(value):
                out["auroc"] = value
        return out
    return {
        "mse": mean_squared_error(y, outputs),
        "mae": mean_absolute_error(y, outputs),
        "r2": r2_score(y, outputs),
    }


def _as_2d(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(len(arr), -1)
