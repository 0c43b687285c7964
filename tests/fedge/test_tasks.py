"""Built-in tasks: lookup, models, data, local training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.errors import ConfigError, UnknownTaskError
from fedge.tasks import TaskConfig, available_tasks, get_task
from fedge.tasks.training import evaluate_model, train_model


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownTaskError,
        match="unknown task 'mnist': choose one of breast_cancer, diabetes, digits, shapes, wine",
    ) as info:
        get_task("mnist")
    assert info.value.code == "unknown_task"
    assert available_tasks() == ["breast_cancer", "diabetes", "digits", "shapes", "wine"]


@pytest.mark.parametrize(("name", "model"), [("digits", "mlp"), ("digits", "cnn"), ("breast_cancer", "mlp")])
def test_models_map_rows_to_one_logit_per_class(name: str, model: str) -> None:
    task = get_task(name)
    net = task.build_model(TaskConfig(name=name, model=model, hidden=16))

    out = net(torch.zeros(7, task.schema.num_features))

    assert out.shape == (7, task.schema.num_classes)


def test_unknown_model_architecture_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no model 'resnet'"):
        get_task("digits").build_model(TaskConfig(model="resnet"))


def test_holdout_split_is_disjoint_seeded_and_within_the_declared_range() -> None:
    task = get_task("digits")
    cfg = TaskConfig(test_fraction=0.25, data_seed=3)

    pool, test = task.split_holdout(cfg)
    _pool2, test2 = task.split_holdout(cfg)

    assert len(pool) + len(test) == 1797
    assert abs(len(test) - 449) <= 1
    np.testing.assert_array_equal(test.y, test2.y)
    assert pool.x.dtype == np.float32 and pool.y.dtype == np.int64
    assert pool.x.min() >= task.schema.value_min and pool.x.max() <= task.schema.value_max


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_local_training_beats_chance_on_held_out_rows(name: str) -> None:
    torch.manual_seed(0)
    task = get_task(name)
    cfg = TaskConfig(name=name, lr=0.05 if name == "digits" else 0.01, batch_size=32)
    pool, test = task.split_holdout(cfg)
    model = task.build_model(cfg)

    result = train_model(model, pool, epochs=3, lr=cfg.lr, batch_size=cfg.batch_size)
    held_out = evaluate_model(model, test)

    assert result.num_examples == len(pool)
    assert held_out.accuracy > 0.85


def test_proximal_term_keeps_weights_closer_to_the_start() -> None:
    task = get_task("digits")
    pool, _ = task.split_holdout(TaskConfig())
    distances = []
    for mu in (0.0, 10.0):
        torch.manual_seed(0)
        model = task.build_model(TaskConfig())
        start = [p.detach().clone() for p in model.parameters()]
        train_model(model, pool, epochs=1, lr=0.05, batch_size=32, proximal_mu=mu)
        distances.append(
            sum(float(((p.detach() - s) ** 2).sum()) for p, s in zip(model.parameters(), start, strict=True))
        )

    assert distances[1] < distances[0]
