"""A resumed run continues its strategy's optimiser: FedAdam's moments and FedAvgM's momentum are
stored with each checkpoint and restored, so round 3 after a resume equals round 3 without one.
Real Flower strategies, a real SQLite registry and artifact store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM

from coordinator.round_recorder import RoundRecorder, with_round_recording
from coordinator.strategies import available_strategies, strategy_class, strategy_kwargs
from coordinator.strategy_state import capture, decode, encode, restore
from coordinator.warm_start import resumed_strategy_state
from fedge.config import load_config
from fedge.errors import ArtifactError
from fedge.serde import state_dict_to_arrays
from fedge.tasks import TaskConfig, get_task
from registry import Registry, RunCreate

GLOBAL0 = {"w": np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4), "b": np.zeros(4, np.float32)}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _reply(node: int, arrays: dict[str, np.ndarray], num_examples: int) -> Message:
    metadata = Metadata(
        run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="q",
        group_id="1", created_at=0.0, ttl=60.0, message_type="train",
    )  # fmt: skip
    content = RecordDict({"arrays": _record(arrays), "metrics": MetricRecord({"num-examples": num_examples})})
    return make_message(metadata, content=content)


def _client_updates(
    global_arrays: dict[str, np.ndarray], server_round: int, clients: int = 2
) -> list[Message]:
    """Clients that move the global model by fixed, round-dependent steps (2: 30 and 10 rows)."""
    replies = []
    for node, examples in ((1, 30), (2, 10), *((n, 20) for n in range(3, clients + 1)))[:clients]:
        rng = np.random.default_rng(100 * server_round + node)
        moved = {
            k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in global_arrays.items()
        }
        replies.append(_reply(node, moved, examples))
    return replies


def _round(strategy: Any, global_arrays: dict[str, np.ndarray], server_round: int) -> dict[str, np.ndarray]:
    # What Flower's configure_train records before sending the round's model (no grid needed here).
    if isinstance(strategy, FedAvgM):
        strategy.current_arrays = strategy.current_arrays or _record(global_arrays)
    else:
        strategy.current_arrays = {k: v.copy() for k, v in global_arrays.items()}
    arrays, _ = strategy.aggregate_train(server_round, _client_updates(global_arrays, server_round))
    return {k: a.numpy() for k, a in arrays.items()}


def _rounds(strategy: Any, start: dict[str, np.ndarray], first: int, last: int) -> dict[str, np.ndarray]:
    arrays = start
    for r in range(first, last + 1):
        arrays = _round(strategy, arrays, r)
    return arrays


STRATEGIES: dict[str, Callable[[], Any]] = {
    "fedadam": lambda: FedAdam(eta=0.05, beta_1=0.9, beta_2=0.99),
    "fedavgm": lambda: FedAvgM(server_learning_rate=1.0, server_momentum=0.9),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_resumed_optimiser_continues_where_it_stopped(name: str) -> None:
    make = STRATEGIES[name]
    uninterrupted = _rounds(make(), GLOBAL0, 1, 3)

    before = make()
    after_two = _rounds(before, GLOBAL0, 1, 2)
    stored = encode(capture(before), name)  # what a checkpoint keeps
    assert capture(before), "a stateful strategy has state after two rounds"

    resumed = make()
    restored = restore(resumed, decode(stored))
    assert restored == (["m_t", "v_t"] if name == "fedadam" else ["momentum_vector"])
    continued = _rounds(resumed, after_two, 3, 3)
    for key in GLOBAL0:
        np.testing.assert_allclose(continued[key], uninterrupted[key], rtol=0, atol=1e-6)

    # Without the state the optimiser starts from zero: round 3 comes out differently.
    fresh = _rounds(make(), after_two, 3, 3)
    assert max(float(np.max(np.abs(fresh[k] - uninterrupted[k]))) for k in GLOBAL0) > 1e-3


def test_a_stateless_strategy_stores_nothing() -> None:
    strategy = FedAvg()
    _rounds(strategy, GLOBAL0, 1, 2)
    assert capture(strategy) == {}


def test_state_of_another_strategy_is_refused_by_name() -> None:
    momentum = FedAvgM(server_momentum=0.9)
    _rounds(momentum, GLOBAL0, 1, 2)
    with pytest.raises(ArtifactError, match=r"'momentum_vector/\d+', which FedAdam does not keep"):
        restore(FedAdam(), decode(encode(capture(momentum), "fedavgm")))
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        decode(b"\x00\x01 not safetensors")


def test_each_checkpoint_stores_the_state_and_a_resume_reads_it_back(registry: Registry) -> None:
    task = get_task("digits")
    model = task.build_model(TaskConfig(name="digits"))
    registry.store.create_run(
        RunCreate(
            run_id="r", task="digits", strategy="fedadam", num_rounds=4, config={}, config_hash="0" * 64
        )
    )
    strategy = FedAdam(eta=0.05, beta_1=0.9, beta_2=0.99)
    recorder = RoundRecorder(
        registry=registry, run_id="r", model=task.build_model(TaskConfig(name="digits")), base_lineage={},
        strategy_state=lambda: capture(strategy), strategy_name="fedadam",
    )  # fmt: skip
    arrays = state_dict_to_arrays(model.state_dict())
    recorder.evaluate_fn(1, arrays)  # before any aggregation the strategy has no state
    _rounds(strategy, GLOBAL0, 1, 2)
    recorder.evaluate_fn(2, arrays)
    first, second = registry.store.list_checkpoints("r")
    assert "strategy_state" not in first.lineage
    recorded = second.lineage["strategy_state"]
    assert recorded["kind"] == "strategy_state" and recorded["media_type"] == "application/safetensors"

    state = resumed_strategy_state(registry, second)
    assert sorted(state) == sorted(capture(strategy))
    for key, array in capture(strategy).items():
        np.testing.assert_array_equal(state[key], array)
    assert resumed_strategy_state(registry, first) == {}

    # A state blob altered on disk is refused, naming the digest check; the checkpoint stays.
    path = registry.artifacts.local_path(recorded["sha256"])
    assert path is not None
    path.write_bytes(b"tampered")
    with pytest.raises(ArtifactError):
        resumed_strategy_state(registry, second)
    assert registry.store.get_checkpoint(second.id).lineage["strategy_state"] == recorded


def test_the_aggregate_keeps_the_model_dtypes_so_the_next_round_validates() -> None:
    # Flower's FedAdam returns float64 of a float32 model; sent on, every float32 reply would fail
    # update validation's dtype check in the next round.
    assert all(v.dtype == np.float32 for v in _rounds(FedAdam(), GLOBAL0, 1, 1).values()) is False
    task = get_task("digits")
    recorder = RoundRecorder(
        registry=None,  # type: ignore[arg-type]  # nothing is registered here
        run_id="r", model=task.build_model(TaskConfig(name="digits")), base_lineage={},
    )  # fmt: skip
    strategy = with_round_recording(FedAdam, recorder)(eta=0.05, min_train_nodes=1)
    global_arrays = GLOBAL0
    for server_round in (1, 2, 3):
        recorder.on_configure_train(server_round, _record(global_arrays))
        recorder.on_train_asked(server_round, [1, 2])
        strategy.current_arrays = {k: v.copy() for k, v in global_arrays.items()}
        arrays, _ = strategy.aggregate_train(server_round, _client_updates(global_arrays, server_round))
        assert {k: a.dtype for k, a in arrays.items()} == {"w": "float32", "b": "float32"}
        assert recorder.rejected_by_round.get(server_round, []) == []
        global_arrays = {k: a.numpy() for k, a in arrays.items()}


@pytest.mark.parametrize("name", available_strategies())
def test_every_strategy_runs_rounds_past_the_first_under_validation(name: str) -> None:
    # Each allow-listed strategy, as its config builds it, for three rounds through the recorder:
    # no honest update is rejected and the model keeps its dtypes (FedAdam once broke from round 2).
    config = load_config([f"strategy={name}", "simulation.num_clients=8"]).strategy
    cls = strategy_class(name)
    recorder = RoundRecorder(
        registry=None,  # type: ignore[arg-type]  # nothing is registered here
        run_id="r", model=get_task("digits").build_model(TaskConfig(name="digits")), base_lineage={},
    )  # fmt: skip
    strategy = with_round_recording(cls, recorder)(**strategy_kwargs(config, cls))
    clients = max(7, config.min_train_nodes)
    global_arrays = GLOBAL0
    for server_round in (1, 2, 3):
        recorder.on_configure_train(server_round, _record(global_arrays))
        recorder.on_train_asked(server_round, range(1, clients + 1))
        # What configure_train records of the model it sends (FedOpt each round, FedAvgM once).
        if hasattr(strategy, "m_t"):
            strategy.current_arrays = {k: v.copy() for k, v in global_arrays.items()}
        elif hasattr(strategy, "momentum_vector") and strategy.current_arrays is None:
            strategy.current_arrays = _record(global_arrays)
        arrays, _ = strategy.aggregate_train(
            server_round, _client_updates(global_arrays, server_round, clients)
        )
        assert arrays is not None, f"{name} aggregated nothing in round {server_round}"
        assert recorder.rejected_by_round.get(server_round, []) == [], recorder.rejected_by_round
        assert {k: a.dtype for k, a in arrays.items()} == {"w": "float32", "b": "float32"}
        global_arrays = {k: a.numpy() for k, a in arrays.items()}
    assert all(np.isfinite(v).all() for v in global_arrays.values())
