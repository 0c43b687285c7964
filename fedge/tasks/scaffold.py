"""``fedge new NAME``: a task package that ``pip install -e .`` and ``fedge simulate task=NAME`` run as is.

The package holds a ``pyproject.toml`` declaring the ``fedge.tasks`` entry point, a task class over a
synthetic tabular data set (binary classification, an MLP with standardization inside), the data
generator, a README and a contract test. Everything is written from the templates below; nothing
is downloaded.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from fedge.errors import ConfigError

__all__ = ["scaffold_task"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A fedge task: {name}"
requires-python = ">=3.11"
dependencies = ["fedge", "numpy"]

# fedge finds the task through this entry point: `fedge simulate task={name}`.
[project.entry-points."fedge.tasks"]
{name} = "{name}.task:{cls}"

[tool.setuptools.packages.find]
include = ["{name}*"]
"""

_README = """\
# {name}

A [fedge](https://github.com/) task package made by `fedge new {name}`.

```bash
pip install -e .                       # registers the task under the fedge.tasks entry point
fedge tasks list                       # {name} is listed with its input spec and target kind
fedge simulate task={name}             # federates it across simulated clients, end to end
python -m pytest tests                 # the task honours fedge's contract
```

Edit `{name}/task.py`: the input spec (feature names or a tensor shape), the target kind
(`TargetSpec.multiclass`, `.binary` or `.regression`), `build_model` (keep preprocessing inside the
model so the ONNX file carries it) and `load_dataset` (the data simulations partition; an
institution's client agent reads its own file instead: `fedge client start --data FILE task={name}`).
"""

_INIT = '''\
"""The {name} task for fedge."""

from {name}.task import {cls}

__all__ = ["{cls}"]
'''

_DATA = '''\
"""Synthetic data for {name}: rows of {features} features, a binary label (seeded, no download)."""

from __future__ import annotations

import numpy as np

__all__ = ["FEATURES", "make_rows"]

FEATURES = tuple(f"feature_{{i}}" for i in range({features}))


def make_rows(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows ``x`` (float32 ``[n, {features}]``) and labels ``y`` (int64, 0 or 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(n, len(FEATURES))).astype(np.float32)
    weights = np.linspace(1.0, -1.0, len(FEATURES))
    logits = x @ weights + 0.5 * x[:, 0] * x[:, 1]
    y = (logits + rng.normal(0.0, 0.5, size=n) > 0).astype(np.int64)
    return x * 10.0 + 50.0, y  # raw units: standardization is the model's job
'''

_TASK = '''\
"""The {name} task: what fedge federates, packages to ONNX and serves."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedge.tasks import Dataset, InputSpec, TargetSpec, Task
from {name}.data import FEATURES, make_rows

__all__ = ["{cls}"]


class {cls}(Task):
    """Binary classification of {features}-feature rows with a small MLP."""

    name = "{name}"
    models = ("mlp",)
    description = "{name}: {features} synthetic features -> binary label (MLP)"
    input_spec = InputSpec.tabular(FEATURES, value_min=-1000.0, value_max=1000.0)
    target = TargetSpec.binary(("negative", "positive"))

    def build_model(self, config: Any) -> Any:
        import torch

        from {name}.model import Model

        x, _ = make_rows(2000, seed=0)  # the declared standardization constants
        mean, scale = torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0) + 1e-6)
        return Model(len(FEATURES), hidden=config.hidden, mean=mean, scale=scale)

    def load_dataset(self) -> Dataset:
        x, y = make_rows(2000, seed=1)
        return Dataset(x, y)
'''

_MODEL = '''\
"""The {name} model: standardization inside, so the ONNX file carries it."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Model"]


class Model(nn.Module):
    """``(x - mean) / scale -> hidden -> hidden -> 2 logits``."""

    def __init__(self, num_features: int, *, hidden: int, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("scale", scale.clone().float())
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale)  # [B, F] -> [B, 2]
'''

_TEST = '''\
"""{name} honours fedge's task contract: it loads, its data fits its specs, its model's output fits."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from fedge.tasks import check_dataset, load_task


def test_the_task_loads_and_its_data_and_model_fit_the_specs() -> None:
    task = load_task("{name}.task:{cls}", label="{name}")
    data = task.load_dataset()
    check_dataset(task, data, where="the simulation data set")
    model = task.build_model(SimpleNamespace(model="mlp", hidden=16))
    out = model(torch.from_numpy(data.x[:4]))
    assert tuple(out.shape) == (4, task.target.num_outputs)
'''


def scaffold_task(name: str, *, parent: Path, features: int = 8) -> Path:
    """Write the package ``parent/name`` and return its folder.

    Raises
    ------
    ConfigError
        If ``name`` is not a valid lower-case Python identifier, or the folder exists.
    """
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ConfigError(
            f"task name {name!r} must be a lower-case Python identifier (letters, digits, '_'), "
            "e.g. chest_xray"
        )
    root = Path(parent) / name
    if root.exists():
        raise ConfigError(f"{root} already exists: choose another name or remove it")
    cls = "".join(part.capitalize() for part in name.split("_") if part)
    cls = cls if cls.endswith("Task") else cls + "Task"
    values = {"name": name, "cls": cls, "dist": name.replace("_", "-"), "features": features}
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"{name}/__init__.py": _INIT,
        f"{name}/data.py": _DATA,
        f"{name}/task.py": _TASK,
        f"{name}/model.py": _MODEL,
        "tests/test_task.py": _TEST,
    }
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return root
