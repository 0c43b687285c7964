"""What a task's model takes and predicts: the input spec, the target spec, and the drift summary spec.

These are plain, frozen data (numpy only): they travel in release manifests, so an edge device can
validate inputs and count drift features without importing the task's package or torch.

An example (``[batch, *shape]`` float32 in, ``[batch, outputs]`` float32 out):

>>> InputSpec.tensor((1, 28, 28), value_min=0.0, value_max=1.0).num_features
784
>>> TargetSpec.binary(("healthy", "sick")).num_outputs
2
>>> TargetSpec.regression(("glucose",)).metric_names
('mse', 'mae', 'r2')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedge.errors import TaskDefinitionError

__all__ = [
    "INPUT_KINDS",
    "REDUCTIONS",
    "TARGET_KINDS",
    "DriftSpec",
    "InputSpec",
    "TargetSpec",
]

INPUT_KINDS = ("tabular", "tensor")
TARGET_KINDS = ("multiclass", "binary", "regression")
# Reductions of a tensor example to the few numbers drift monitoring counts (see DriftSpec).
REDUCTIONS = ("features", "channel_mean", "channel_std", "intensity_histogram")


@dataclass(frozen=True)
class InputSpec:
    """One example as the model takes it: float32 of a fixed ``shape`` (the batch axis is added).

    Attributes
    ----------
    kind : str
        ``tabular`` (``shape == (len(feature_names),)``, named columns) or ``tensor`` (any fixed
        shape, e.g. ``(1, 28, 28)`` channels-first).
    shape : tuple of int
        Per-example shape, without the batch axis.
    feature_names : tuple of str
        Tabular only: one name per column, in model input order.
    value_min, value_max : float
        The range every value must lie in (inclusive); infinite bounds check only finiteness.
    name : str
        The ONNX input name.
    """

    kind: str
    shape: tuple[int, ...]
    feature_names: tuple[str, ...] = ()
    value_min: float = -math.inf
    value_max: float = math.inf
    name: str = "x"

    @classmethod
    def tabular(
        cls, feature_names: tuple[str, ...] | list[str], *, value_min: float = -math.inf,
        value_max: float = math.inf,
    ) -> InputSpec:  # fmt: skip
        """Rows of named float features."""
        names = tuple(str(n) for n in feature_names)
        return cls("tabular", (len(names),), names, float(value_min), float(value_max))

    @classmethod
    def tensor(
        cls, shape: tuple[int, ...] | list[int], *, value_min: float = -math.inf,
        value_max: float = math.inf,
    ) -> InputSpec:  # fmt: skip
        """Examples of a fixed N-d shape (channels first for images)."""
        return cls("tensor", tuple(int(d) for d in shape), (), float(value_min), float(value_max))

    @property
    def num_features(self) -> int:
        """Values in one example (the product of ``shape``)."""
        return int(np.prod(self.shape)) if self.shape else 0

    @property
    def channels(self) -> int:
        """The first axis of a tensor example (1 for tabular rows)."""
        return self.shape[0] if self.kind == "tensor" and len(self.shape) > 1 else 1

    def check(self, task: str) -> None:
        """Raise :class:`TaskDefinitionError` naming ``task`` and the field when the spec is unusable."""
        if self.kind not in INPUT_KINDS:
            raise TaskDefinitionError(
                f"task {task!r}: input_spec.kind must be one of {', '.join(INPUT_KINDS)}, got {self.kind!r}"
            )
        if not self.shape or any(d < 1 for d in self.shape):
            raise TaskDefinitionError(
                f"task {task!r}: input_spec.shape must be positive sizes, got {list(self.shape)}"
            )
        if self.kind == "tabular" and (len(self.shape) != 1 or len(self.feature_names) != self.shape[0]):
            raise TaskDefinitionError(
                f"task {task!r}: a tabular input_spec needs one feature name per column "
                f"(shape {list(self.shape)}, {len(self.feature_names)} names): use InputSpec.tabular(names)"
            )
        if not self.value_min <= self.value_max:
            raise TaskDefinitionError(
                f"task {task!r}: input_spec.value_min {self.value_min} exceeds value_max {self.value_max}"
            )

    def describe(self) -> str:
        """Short text for tables: ``tabular[30]`` or ``tensor[1x28x28]``."""
        return f"{self.kind}[{'x'.join(str(d) for d in self.shape)}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for manifests); infinite bounds become ``None``."""
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "feature_names": list(self.feature_names),
            "value_range": [_finite_or_none(self.value_min), _finite_or_none(self.value_max)],
            "name": self.name,
            "dtype": "float32",
        }


@dataclass(frozen=True)
class TargetSpec:
    """What the model predicts, which decides the loss, the metrics and how outputs read.

    Classification models output one logit per class, ``[batch, classes]`` (binary: 2 logits, so the
    argmax is the label and ``softmax[:, 1]`` the positive score); regression models output
    ``[batch, len(output_names)]``.

    Attributes
    ----------
    kind : str
        ``multiclass``, ``binary`` or ``regression``.
    class_names : tuple of str
        Classification: the label of each class index.
    output_names : tuple of str
        Regression: the name of each predicted value.
    output : str
        The ONNX output name.
    """

    kind: str
    class_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    output: str = "logits"

    @classmethod
    def multiclass(cls, class_names: tuple[str, ...] | list[str]) -> TargetSpec:
        """One label out of ``len(class_names)``."""
        return cls("multiclass", tuple(str(c) for c in class_names))

    @classmethod
    def binary(cls, class_names: tuple[str, ...] | list[str] = ("0", "1")) -> TargetSpec:
        """Two classes; the second is the positive one for AUROC."""
        return cls("binary", tuple(str(c) for c in class_names))

    @classmethod
    def regression(cls, output_names: tuple[str, ...] | list[str] = ("y",)) -> TargetSpec:
        """One or more real values."""
        return cls("regression", (), tuple(str(n) for n in output_names), output="prediction")

    @property
    def is_classification(self) -> bool:
        """Whether labels are class indices (multiclass or binary)."""
        return self.kind != "regression"

    @property
    def num_classes(self) -> int:
        """Classes of a classification target (0 for regression)."""
        return len(self.class_names) if self.is_classification else 0

    @property
    def num_outputs(self) -> int:
        """Width of the model's output."""
        return len(self.class_names) if self.is_classification else len(self.output_names)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics fedge reports for this kind (a task may add its own)."""
        if self.kind == "binary":
            return ("accuracy", "macro-f1", "auroc")
        if self.kind == "multiclass":
            return ("accuracy", "macro-f1")
        return ("mse", "mae", "r2")

    @property
    def primary_metric(self) -> str:
        """The metric the run's summary and central evaluation lead with."""
        return "accuracy" if self.is_classification else "r2"

    def check(self, task: str) -> None:
        """Raise :class:`TaskDefinitionError` naming ``task`` and the field when the spec is unusable."""
        if self.kind not in TARGET_KINDS:
            raise TaskDefinitionError(
                f"task {task!r}: target.kind must be one of {', '.join(TARGET_KINDS)}, got {self.kind!r}"
            )
        if self.kind == "binary" and len(self.class_names) != 2:
            raise TaskDefinitionError(
                f"task {task!r}: a binary target has exactly 2 class names, got {len(self.class_names)}"
            )
        if self.kind == "multiclass" and len(self.class_names) < 2:
            raise TaskDefinitionError(
                f"task {task!r}: a multiclass target needs at least 2 class names, "
                f"got {len(self.class_names)}"
            )
        if self.kind == "regression" and not self.output_names:
            raise TaskDefinitionError(
                f"task {task!r}: a regression target names at least one output: TargetSpec.regression(('y',))"
            )

    def describe(self) -> str:
        """Short text for tables: ``multiclass(10)``, ``binary``, ``regression(1)``."""
        if self.kind == "regression":
            return f"regression({len(self.output_names)})"
        return "binary" if self.kind == "binary" else f"multiclass({len(self.class_names)})"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for manifests and lineages)."""
        return {
            "kind": self.kind,
            "class_names": list(self.class_names),
            "output_names": list(self.output_names),
            "output": self.output,
        }


@dataclass(frozen=True)
class DriftSpec:
    """Which numbers per example drift monitoring counts, computable from the manifest alone.

    ``features`` counts the input values themselves (tabular rows; ``indices`` may select some).
    For tensors, a reduction keeps the count small and meaningful: ``channel_mean`` and
    ``channel_std`` give one number per channel, ``intensity_histogram`` the share of an example's
    values in each of ``bins`` equal-width bins over ``value_range``.
    """

    reductions: tuple[str, ...] = ("features",)
    bins: int = 8
    value_range: tuple[float, float] = (0.0, 1.0)
    indices: tuple[int, ...] = field(default_factory=tuple)

    def check(self, task: str, spec: InputSpec) -> None:
        """Raise :class:`TaskDefinitionError` when the reductions do not fit the input spec."""
        bad = [r for r in self.reductions if r not in REDUCTIONS]
        if bad or not self.reductions:
            raise TaskDefinitionError(
                f"task {task!r}: drift.reductions must be some of {', '.join(REDUCTIONS)}, got {list(bad)}"
            )
        if "features" in self.reductions and spec.num_features > 512 and not self.indices:
            raise TaskDefinitionError(
                f"task {task!r}: drift would count all {spec.num_features} input values: declare "
                "DriftSpec(reductions=('channel_mean', 'intensity_histogram')) or select indices"
            )
        if any(not 0 <= i < spec.num_features for i in self.indices):
            raise TaskDefinitionError(f"task {task!r}: drift.indices must lie in [0, {spec.num_features})")
        if self.bins < 2 or not self.value_range[0] < self.value_range[1]:
            raise TaskDefinitionError(f"task {task!r}: drift.bins must be >= 2 over a non-empty value_range")

    def feature_names(self, spec: InputSpec) -> tuple[str, ...]:
        """One name per reduced feature, in the order :meth:`reduce` returns them."""
        names: list[str] = []
        for r in self.reductions:
            if r == "features":
                base = spec.feature_names or tuple(f"x{i}" for i in range(spec.num_features))
                names += [base[i] for i in (self.indices or range(spec.num_features))]
            elif r in ("channel_mean", "channel_std"):
                names += [f"{r}[{c}]" for c in range(spec.channels)]
            else:
                names += [f"intensity[{b}]" for b in range(self.bins)]
        return tuple(names)

    def reduce(self, x: np.ndarray, spec: InputSpec) -> np.ndarray:
        """``[n, *shape]`` examples -> ``[n, features]`` float64 values that drift counts."""
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        flat = x.reshape(n, -1)
        parts: list[np.ndarray] = []
        for r in self.reductions:
            if r == "features":
                parts.append(flat[:, list(self.indices)] if self.indices else flat)
            elif r in ("channel_mean", "channel_std"):
                per_channel = x.reshape(n, spec.channels, -1)
                parts.append(per_channel.mean(2) if r == "channel_mean" else per_channel.std(2))
            else:
                lo, hi = self.value_range
                scaled = np.clip((flat - lo) / (hi - lo), 0.0, 1.0 - 1e-12)
                idx = (scaled * self.bins).astype(np.int64)
                counts = np.zeros((n, self.bins))
                np.add.at(counts, (np.repeat(np.arange(n), flat.shape[1]), idx.ravel()), 1.0)
                parts.append(counts / max(flat.shape[1], 1))
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for manifests)."""
        return {
            "reductions": list(self.reductions),
            "bins": self.bins,
            "value_range": list(self.value_range),
            "indices": list(self.indices),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> DriftSpec:
        """Inverse of :meth:`to_dict` (a missing entry means raw features)."""
        if not raw:
            return cls()
        return cls(
            reductions=tuple(raw.get("reductions", ("features",))),
            bins=int(raw.get("bins", 8)),
            value_range=(
                float(raw.get("value_range", (0.0, 1.0))[0]),
                float(raw.get("value_range", (0, 1))[1]),
            ),
            indices=tuple(int(i) for i in raw.get("indices", ())),
        )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
