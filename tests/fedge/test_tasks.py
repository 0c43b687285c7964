"""Built-in and user tasks: lookup, models, data, local training and evaluation by target kind, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.errors import ConfigError, TaskDefinitionError, UnknownTaskError
from fedge.serde import state_dict_from_arrays, state_dict_to_arrays
from fedge.tasks import Dataset, TaskConfig, available_tasks, get_task
from fedge.tasks.training import (
    check_model_output,
    evaluate_model,
    predict_outputs,
    resolve_device,
    train_model,
)
from tests.simulations.custom_tasks import CountingSteps, TinyImages, WrongShape, WrongWidth

CUSTOM = "tests.simulations.custom_tasks"


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

    out = net(torch.zeros(7, *task.input_spec.shape))

    assert out.shape == (7, task.target.num_outputs)


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
    assert pool.x.min() >= task.input_spec.value_min and pool.x.max() <= task.input_spec.value_max


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


def test_wine_trains_to_high_accuracy_with_macro_f1() -> None:
    torch.manual_seed(0)
    task = get_task("wine")
    cfg = TaskConfig(name="wine", hidden=32, lr=0.05)
    pool, test = task.split_holdout(cfg)
    model = task.build_model(cfg)

    train_model(model, pool, task=task, epochs=20, lr=cfg.lr, batch_size=16)
    held_out = evaluate_model(model, test, task=task)

    assert set(held_out.metrics) == {"accuracy", "macro-f1"}
    assert held_out.accuracy > 0.85 and held_out.metrics["macro-f1"] > 0.8


def test_diabetes_regression_reports_mse_mae_r2_and_explains_variance() -> None:
    torch.manual_seed(0)
    task = get_task("diabetes")
    cfg = TaskConfig(name="diabetes", hidden=32, lr=0.01, batch_size=16)
    pool, test = task.split_holdout(cfg)
    model = task.build_model(cfg)

    trained = train_model(model, pool, task=task, epochs=30, lr=cfg.lr, batch_size=cfg.batch_size)
    held_out = evaluate_model(model, test, task=task)
    outputs = predict_outputs(model, test.x)

    assert set(trained.metrics) == set(held_out.metrics) == {"mse", "mae", "r2"}
    assert np.isnan(held_out.accuracy)
    assert held_out.metrics["r2"] > 0.3
    assert outputs.shape == (len(test), 1) and outputs.dtype == np.float32
    # The metrics are those of the predicted outputs in the target's units.
    mae = float(np.mean(np.abs(outputs - test.y)))
    assert held_out.metrics["mae"] == pytest.approx(mae, rel=1e-5)


def test_binary_evaluation_adds_auroc() -> None:
    task = get_task("breast_cancer")
    cfg = TaskConfig(name="breast_cancer")
    _, test = task.split_holdout(cfg)

    result = evaluate_model(task.build_model(cfg), test, task=task)

    assert set(result.metrics) == {"accuracy", "macro-f1", "auroc"}
    assert 0.0 <= result.metrics["auroc"] <= 1.0


def test_image_task_trains_a_cnn_on_n_d_examples() -> None:
    torch.manual_seed(0)
    task = get_task("shapes")
    cfg = TaskConfig(name="shapes", model="cnn", hidden=32, lr=0.05)
    pool, test = task.split_holdout(cfg)
    model = task.build_model(cfg)

    result = train_model(model, pool, task=task, epochs=2, lr=cfg.lr, batch_size=32)
    held_out = evaluate_model(model, test, task=task)

    assert pool.x.shape[1:] == (1, 28, 28) and result.num_examples == len(pool)
    assert held_out.accuracy > 0.5  # chance is 0.25


def test_multi_output_regression_on_tensors() -> None:
    torch.manual_seed(0)
    task = TinyImages()
    data = task.load_dataset()
    model = task.build_model(TaskConfig())

    before = evaluate_model(model, data, task=task).metrics["mse"]
    train_model(model, data, task=task, epochs=30, lr=0.05, batch_size=16)
    after = evaluate_model(model, data, task=task).metrics

    assert predict_outputs(model, data.x).shape == (90, 3)
    assert after["mse"] < before / 4


def test_custom_train_step_and_metrics_hooks_are_used_with_the_proximal_penalty() -> None:
    task = CountingSteps()
    data = task.load_dataset()  # 120 rows: 4 batches of 32 per epoch
    model = task.build_model(TaskConfig(hidden=8))

    trained = train_model(model, data, task=task, epochs=2, lr=0.05, batch_size=32, proximal_mu=0.1)
    plain = train_model(model, data, task=task, epochs=1, lr=0.05, batch_size=32)
    evaluated = evaluate_model(model, data, task=task)

    assert task.steps == 12 and task.penalties == 8
    assert "positive-rate" in trained.metrics and "positive-rate" in evaluated.metrics
    assert 0.0 <= plain.metrics["positive-rate"] <= 1.0


def test_model_output_check_names_the_task_and_the_declared_width() -> None:
    with pytest.raises(
        TaskDefinitionError,
        match=r"task 'wrong_width': the model outputs \[2, 3\] but target declares 2 classes",
    ) as info:
        check_model_output(WrongWidth(), TaskConfig())
    assert info.value.exit_code == 2
    with pytest.raises(
        TaskDefinitionError, match=r"task 'wrong_shape': the model fails on an input of shape \[2, 4\]"
    ):
        check_model_output(WrongShape(), TaskConfig())


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "diabetes", "shapes"])
def test_every_builtin_model_passes_the_output_check(name: str) -> None:
    task = get_task(name)
    check_model_output(task, TaskConfig(name=name, model=task.models[0]), task.load_dataset().x)


def test_device_setting_resolves_auto_and_refuses_cuda_without_a_gpu() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"task\.device must be auto, cpu or cuda, got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"task\.device=cuda but this process sees no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the CUDA path is untested here"
)
def test_training_on_cuda_returns_a_cpu_model_of_the_same_form() -> None:
    task = get_task("shapes")
    cfg = TaskConfig(name="shapes", model="cnn", hidden=32, lr=0.05)
    pool, test = task.split_holdout(cfg)
    results = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = task.build_model(cfg)
        train_model(model, pool, task=task, epochs=1, lr=cfg.lr, batch_size=32, device=resolve_device(device))
        arrays = state_dict_to_arrays(model.state_dict())
        results[device] = (model, state_dict_from_arrays(arrays), evaluate_model(model, test, task=task))

    (_, cpu_state, cpu_eval), (gpu_model, gpu_state, gpu_eval) = results["cpu"], results["cuda"]
    assert all(p.device.type == "cpu" for p in gpu_model.parameters())
    assert {k: (v.shape, v.dtype) for k, v in gpu_state.items()} == {
        k: (v.shape, v.dtype) for k, v in cpu_state.items()
    }
    assert gpu_eval.accuracy > 0.5 and abs(gpu_eval.accuracy - cpu_eval.accuracy) < 0.1


def test_a_task_outside_fedge_is_found_by_import_path() -> None:
    task = get_task(f"{CUSTOM}:TinyImages")

    assert task.name == "tiny_images" and task.input_spec.shape == (2, 6, 6)
    assert isinstance(task.load_dataset(), Dataset)
