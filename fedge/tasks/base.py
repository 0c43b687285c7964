"""A flat-row view of a task (``DataSchema``), kept for code that has not moved to the input/target specs.

New code reads :attr:`Task.input_spec` and :attr:`Task.target`; this view exists only while the
last flat-row readers are generalised, and holds for tabular tasks only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DataSchema"]


@dataclass(frozen=True)
class DataSchema:
    """The rows a tabular classification task's model takes: flat float32 features, class labels."""

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
