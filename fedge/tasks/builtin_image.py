"""Built-in image example: ``shapes``, synthetic 28x28 grey images of four shapes (``[1, 28, 28]``, CNN).

The images are generated, seeded, on the spot: a circle, a square, a triangle or a cross of random
size and position, drawn with random brightness on a noisy background. Drift monitoring counts
per-image summaries (channel mean and spread, and an intensity histogram), not 784 pixels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.errors import ConfigError
from fedge.tasks.api import Dataset, Task
from fedge.tasks.spec import DriftSpec, InputSpec, TargetSpec

if TYPE_CHECKING:
    from torch import nn

__all__ = ["SHAPE_CLASSES", "ShapesTask", "make_shapes"]

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
SIDE = 28


def make_shapes(n: int, *, seed: int = 0, noise: float = 0.08) -> Dataset:
    """``n`` images ``[n, 1, 28, 28]`` float32 in [0, 1] with labels 0..3 (balanced, seeded)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    images = rng.normal(0.1, noise, size=(n, SIDE, SIDE)).astype(np.float32)
    for i, label in enumerate(labels):
        r = rng.uniform(5.0, 9.0)
        cy, cx = rng.uniform(r + 1, SIDE - r - 1, size=2)
        dy, dx = yy - cy, xx - cx
        if label == 0:
            mask = dy**2 + dx**2 <= r**2
        elif label == 1:
            mask = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
        elif label == 2:
            mask = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.55)
        else:
            w = max(1.5, r * 0.25)
            mask = ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
        images[i][mask] += rng.uniform(0.5, 0.85)
    return Dataset(np.clip(images, 0.0, 1.0)[:, None, :, :], labels.astype(np.int64))


class ShapesTask(Task):
    """Four synthetic shapes on noisy 28x28 grey images: a small CNN over ``[1, 28, 28]`` tensors."""

    name = "shapes"
    models = ("cnn", "mlp")
    description = "synthetic 28x28 shapes: circle, square, triangle, cross (CNN over [1, 28, 28])"
    preprocessing_note = "grey image, channels first, intensities scaled to [0, 1]"
    input_spec = InputSpec.tensor((1, SIDE, SIDE), value_min=0.0, value_max=1.0)
    target = TargetSpec.multiclass(SHAPE_CLASSES)
    drift = DriftSpec(reductions=("channel_mean", "channel_std", "intensity_histogram"), bins=8)
    num_examples = 2400

    def build_model(self, config: Any) -> nn.Module:
        from torch import nn

        from fedge.tasks.models import MLP, ImageCNN

        if config.model == "cnn":
            return ImageCNN(
                1, SIDE, SIDE, len(SHAPE_CLASSES), channels=8, hidden=config.hidden, center=0.2, scale=0.25
            )
        if config.model == "mlp":
            return nn.Sequential(nn.Flatten(), MLP(SIDE * SIDE, len(SHAPE_CLASSES), hidden=config.hidden))
        raise ConfigError(f"task 'shapes' has no model {config.model!r}: choose 'cnn' or 'mlp'")

    def load_dataset(self) -> Dataset:
        return _cached(self.num_examples)


@lru_cache(maxsize=2)
def _cached(n: int) -> Dataset:
    return make_shapes(n, seed=20261202)
