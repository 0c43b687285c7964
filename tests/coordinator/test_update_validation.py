"""Update validation before aggregation: bad replies are dropped, logged and recorded in the lineage.

Replies are real Flower Messages holding real ArrayRecords, passed through the real strategy
wrapper (:func:`with_round_recording` over Flower's FedAvg) and a real SQLite registry.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.supercore.task_identity import TaskIdentity

from coordinator.round_recorder import RoundRecorder, with_round_recording
from coordinator.strategies import strategy_class
from coordinator.update_validation import GlobalModel, validate_replies
from fedge.config import UpdateValidationConfig
from fedge.errors import FederationError
from fedge.serde import state_dict_to_arrays
from fedge.tasks import TaskConfig, get_task
from registry import RegistryConfig, RunCreate, open_registry


def _metadata(node: int) -> Metadata:
    return Metadata(
        run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="q",
        group_id="1", created_at=0.0, ttl=60.0, message_type="train",
    )  # fmt: skip


def _reply(node: int, arrays: ArrayRecord, num_examples: object = 10, **extra: object) -> Message:
    content = RecordDict(
        {
            "arrays": arrays,
            "metrics": MetricRecord({"num-examples": num_examples, "train-loss": 0.5}),
            **extra,
        }  # type: ignore[dict-item]
    )
    return make_message(_metadata(node), content=content)


def _shifted(base: dict[str, np.ndarray], step: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + step * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in base.items()}


def _record(values: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in values.items()})


@pytest.fixture
def setting(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    # configure_train builds real instruction Messages, which need Flower's run identity
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    task = get_task("digits")
    cfg = TaskConfig(name="digits")
    _, holdout = task.split_holdout(cfg)
    torch.manual_seed(0)
    model = task.build_model(cfg)
    registry = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    registry.store.create_run(
        RunCreate(run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="h")
    )
    recorder = RoundRecorder(
        registry=registry, run_id="r", model=task.build_model(cfg), base_lineage={"run_id": "r"},
        test_set=holdout, task=task,
    )  # fmt: skip
    base = {k: v.numpy() for k, v in state_dict_to_arrays(model.state_dict()).items()}
    yield registry, recorder, base
    registry.close()


def _strategy(recorder: RoundRecorder, min_train_nodes: int = 2):  # type: ignore[no-untyped-def]
    cls = with_round_recording(strategy_class("fedavg"), recorder)
    return cls(min_train_nodes=min_train_nodes, min_available_nodes=2, min_evaluate_nodes=2)


def _configure(strategy, base) -> None:  # type: ignore[no-untyped-def]
    class _Grid:
        def get_node_ids(self):  # type: ignore[no-untyped-def]
            return [1, 2, 3, 4, 5, 6]

    strategy.configure_train(1, _record(base), ConfigRecord({"lr": 0.1}), _Grid())


def test_bad_replies_are_dropped_logged_and_recorded_and_the_round_completes(setting, caplog) -> None:  # type: ignore[no-untyped-def]
    registry, recorder, base = setting
    strategy = _strategy(recorder)
    _configure(strategy, base)
    honest = [_shifted(base, 0.01, seed) for seed in range(3)]
    key = next(iter(base))
    wrong_shape = dict(honest[0])
    wrong_shape[key] = np.zeros((3, 3), dtype=np.float32)
    with_nan = dict(honest[1])
    with_nan[key] = honest[1][key].copy()
    with_nan[key].flat[0] = np.nan
    unknown_key = {**honest[2], "smuggled": np.zeros(4, dtype=np.float32)}
    replies = [
        _reply(1, _record(honest[0])),
        _reply(2, _record(honest[1])),
        _reply(3, _record(honest[2])),
        _reply(4, _record(wrong_shape)),
        _reply(5, _record(with_nan)),
        _reply(6, _record(_shifted(base, 5.0, 9))),  # oversized norm: ~500x the others
        _reply(7, _record(unknown_key)),
        _reply(8, _record(honest[0]), extra_record=ConfigRecord({"x": 1})),
        _reply(9, _record(honest[0]), num_examples=-3),
    ]

    with caplog.at_level(logging.WARNING, logger="coordinator.round_recorder"):
        arrays, _ = strategy.aggregate_train(1, replies)
    recorder.evaluate_fn(1, arrays)

    checks = {r.node_id: r.check for r in recorder.rejected_by_round[1]}
    assert checks == {
        4: "shape-dtype", 5: "non-finite", 6: "update-norm", 7: "array-keys", 8: "unknown-records",
        9: "num-examples",
    }  # fmt: skip
    # the aggregate is the mean of the three honest replies
    expected = np.mean([h[key] for h in honest], axis=0)
    np.testing.assert_allclose(arrays[key].numpy(), expected, rtol=1e-5, atol=1e-6)
    # the registry holds the round's checkpoint, its lineage naming every rejection
    (checkpoint,) = registry.store.list_checkpoints("r")
    lineage = checkpoint.lineage
    assert [n["node_id"] for n in lineage["nodes"]] == [1, 2, 3]
    rejected = {r["node_id"]: r for r in lineage["rejected_updates"]}
    assert set(rejected) == {4, 5, 6, 7, 8, 9}
    assert rejected[6]["value"] > rejected[6]["bound"] > 0
    assert "smuggled" in rejected[7]["value"]
    assert "extra_record" in rejected[8]["value"]
    logged = caplog.text
    for node in (4, 5, 6, 7, 8, 9):
        assert f"dropped the update of node {node}" in logged


def test_a_round_left_below_min_train_nodes_fails_with_a_clear_message(setting) -> None:  # type: ignore[no-untyped-def]
    _, recorder, base = setting
    strategy = _strategy(recorder, min_train_nodes=3)
    _configure(strategy, base)
    nan = {k: np.full_like(v, np.nan) for k, v in base.items()}
    replies = [
        _reply(1, _record(_shifted(base, 0.01, 1))),
        _reply(2, _record(_shifted(base, 0.01, 2))),
        _reply(3, _record(nan)),
    ]

    with pytest.raises(
        FederationError,
        match=r"round 1: update validation dropped 1 train replies \(node 3: non-finite\); 2 left, "
        r"fewer than strategy.min_train_nodes=3",
    ):
        strategy.aggregate_train(1, replies)


def test_absolute_and_relative_norm_bounds(setting) -> None:  # type: ignore[no-untyped-def]
    _, _, base = setting
    model = GlobalModel(_record(base))
    small = [_reply(n, _record(_shifted(base, 0.01, n))) for n in range(1, 5)]
    big = _reply(9, _record(_shifted(base, 0.05, 9)))  # 5x the median: inside 10x, above 3x

    assert validate_replies([*small, big], model, UpdateValidationConfig()).rejected == []
    three = validate_replies([*small, big], model, UpdateValidationConfig(norm_multiple=3.0))
    assert [(r.node_id, r.check) for r in three.rejected] == [(9, "update-norm")]
    norm = three.norms[1]
    absolute = validate_replies(
        [*small, big], model, UpdateValidationConfig(max_update_norm=norm * 0.5, norm_multiple=None)
    )
    assert len(absolute.rejected) == 5 and absolute.accepted == []
    off = validate_replies([*small, big], model, UpdateValidationConfig(enabled=False))
    assert len(off.accepted) == 5
    assert math.isclose(three.norms[9] / np.median([three.norms[n] for n in range(1, 5)]), 5, rel_tol=0.2)


def test_a_malformed_or_oversized_payload_is_dropped(setting) -> None:  # type: ignore[no-untyped-def]
    _, _, base = setting
    model = GlobalModel(_record(base))
    key = next(iter(base))
    good = _record(_shifted(base, 0.01, 1))
    header = good[key]
    truncated = ArrayRecord(
        {
            **{k: v for k, v in good.items()},
            key: Array(header.dtype, header.shape, header.stype, header.data[:-8]),
        }
    )
    padded = ArrayRecord(
        {
            **{k: v for k, v in good.items()},
            key: Array(header.dtype, header.shape, header.stype, header.data + b"\0" * 50_000),
        }
    )
    lying = ArrayRecord(
        {
            **{k: v for k, v in good.items()},
            key: Array(header.dtype, header.shape, header.stype, Array(np.zeros(3, np.float32)).data),
        }
    )

    result = validate_replies(
        [_reply(1, good), _reply(2, truncated), _reply(3, padded), _reply(4, lying), _reply(5, good)],
        model, UpdateValidationConfig(),
    )  # fmt: skip

    assert {r.node_id: r.check for r in result.rejected} == {
        2: "malformed-array", 3: "payload-size", 4: "malformed-array",
    }  # fmt: skip
    assert [int(m.metadata.src_node_id) for m in result.accepted] == [1, 5]


def test_a_client_claiming_a_huge_sample_count_is_dropped_not_let_outweigh_the_rest(setting) -> None:  # type: ignore[no-untyped-def]
    """FedAvg weighs each update by its claimed ``num-examples``: a liar claiming 10^9 would own the
    aggregate. Its update here is a plain, small one (it passes every norm check)."""
    registry, recorder, base = setting
    honest = [_reply(n, _record(_shifted(base, 0.01, n))) for n in (1, 2, 3)]
    liar_values = {k: (v + 0.02).astype(v.dtype) for k, v in base.items()}  # its pull, if it weighed in
    liar = _reply(4, _record(liar_values), num_examples=10**9)
    big_site = _reply(5, _record(_shifted(base, 0.01, 5)), num_examples=500)  # 50x the median: kept

    result = validate_replies([*honest, liar, big_site], GlobalModel(_record(base)), UpdateValidationConfig())
    assert [(r.node_id, r.check, r.value, r.bound) for r in result.rejected] == [
        (4, "num-examples", 1e9, 1000.0)
    ]
    assert {int(m.metadata.src_node_id) for m in result.accepted} == {1, 2, 3, 5}
    capped = validate_replies(
        [*honest, big_site], GlobalModel(_record(base)), UpdateValidationConfig(max_num_examples=100)
    )
    assert [(r.node_id, r.check, r.bound) for r in capped.rejected] == [(5, "num-examples", 100)]

    strategy = _strategy(recorder)
    _configure(strategy, base)
    arrays, _ = strategy.aggregate_train(1, [*honest, liar])
    recorder.evaluate_fn(1, arrays)
    key = next(iter(base))
    aggregate = arrays[key].numpy()
    honest_mean = np.mean([r.content["arrays"][key].numpy() for r in honest], axis=0)
    np.testing.assert_allclose(aggregate, honest_mean, atol=1e-6)  # the liar did not pull it
    (checkpoint,) = registry.store.list_checkpoints("r")
    (dropped,) = checkpoint.lineage["rejected_updates"]
    assert (dropped["node_id"], dropped["check"], dropped["bound"]) == (4, "num-examples", 1000.0)  # 100 x 10
