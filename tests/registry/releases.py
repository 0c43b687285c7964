"""Test factories: a task's model, exported and released as a signed, verified bundle (real ONNX)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedge.crypto import Ed25519PrivateKey, generate_private_key
from fedge.release_format import VerifiedBundle, verify_bundle
from fedge.tasks import Task, TaskConfig, get_task
from registry import ModelVersionCreate, export_onnx, manifest_preprocessing
from registry.bundle import prepare_release, write_bundle


@dataclass(frozen=True)
class TaskRelease:
    """A released model of ``task`` and the held-out examples it was released with."""

    task: Task
    model: torch.nn.Module
    onnx_bytes: bytes
    path: Path
    key: Ed25519PrivateKey
    verified: VerifiedBundle
    x: np.ndarray
    y: np.ndarray


def release_task(
    folder: Path, name: str, *, model: str = "mlp", hidden: int = 16, epochs: int = 0, train_rows: int = 480
) -> TaskRelease:
    """Build (and train ``epochs`` on ``train_rows`` examples) a model of task ``name``, then release it."""
    torch.manual_seed(0)
    task = get_task(name)
    cfg = TaskConfig(name=name, model=model, hidden=hidden)
    net = task.build_model(cfg)
    pool, test = task.split_holdout(cfg)
    if epochs:
        _train(task, net, pool.x[:train_rows], pool.y[:train_rows], epochs=epochs)
    spec = task.input_spec
    onnx_bytes = export_onnx(net, spec.shape, input_name=spec.name, output_name=task.target.output)
    key = generate_private_key()
    release = prepare_release(
        version=ModelVersionCreate(name, "run-1", 3, (), {}, {}, {"task": name}),
        onnx_bytes=onnx_bytes,
        private_key=key,
        reference_inputs=test.x,
        preprocessing=manifest_preprocessing(task),
    )
    path = write_bundle(
        folder / f"{name}.bundle", manifest=release.manifest, signature=release.signature, files=release.files
    )
    return TaskRelease(
        task, net, onnx_bytes, path, key, verify_bundle(path, key.public_key()), test.x, test.y
    )


def _train(task: Task, net: torch.nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int) -> None:
    """A few epochs of the task's own training step (Adam, which learns shapes in 2 epochs; batches of 32)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.randperm(len(ys), generator=torch.Generator().manual_seed(0))
    net.train()
    for _ in range(epochs):
        for start in range(0, len(ys), 32):
            idx = order[start : start + 32]
            task.train_step(net, xs[idx], ys[idx], optimizer)
    net.eval()
