"""SecAgg+ rounds: what the ServerApp receives holds no client's update in the clear, only their sum is
recoverable, a dropout within the threshold still completes the round, and a real simulation runs it.

The in-process test runs fedge's own pieces end to end without a SuperLink: the coordinator's
``run_secure_rounds`` (Flower's SecAggPlusWorkflow, LegacyContext, the round recorder with a real
SQLite registry) against fedge's real ClientApp (its mods: ``secaggplus_mod``; its train handler and
the clients' own training) through a loopback Grid that records every reply the ServerApp receives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common.recorddict_compat import recorddict_to_fitres
from flwr.supercore.task_identity import TaskIdentity

import client.secure_aggregation as client_secagg
from coordinator.round_recorder import RoundRecorder
from coordinator.secure_aggregation import run_secure_rounds
from fedge.config import load_config
from fedge.serde import state_dict_to_arrays
from fedge.tasks import get_task
from registry import RegistryConfig, RunCreate, open_registry
from simulations.loopback_grid import LoopbackGrid

FEDGE = str(Path(sys.executable).parent / "fedge")


@pytest.fixture
def true_updates(monkeypatch: pytest.MonkeyPatch) -> dict[int, tuple[list[np.ndarray], int]]:
    """Each client's trained parameters and weight, as its handler produced them before masking."""
    seen: dict[int, tuple[list[np.ndarray], int]] = {}
    original = client_secagg.secure_train_reply

    def recording(content: RecordDict, train: Any) -> RecordDict:
        reply = original(content, train)
        fitres = recorddict_to_fitres(reply, keep_input=True)
        seen[len(seen)] = (parameters_to_ndarrays(fitres.parameters), fitres.num_examples)
        return reply

    monkeypatch.setattr(client_secagg, "secure_train_reply", recording)
    return seen


def _run(tmp_path: Path, nodes: int, drop: set[int]) -> tuple[LoopbackGrid, dict[str, np.ndarray], list[str]]:
    config = load_config(
        [
            "strategy.secure_aggregation=true", f"simulation.num_clients={nodes}", "strategy.num_rounds=1",
            "task.local_epochs=1", f"strategy.min_train_nodes={nodes - len(drop)}",
            f"strategy.min_available_nodes={nodes}", "privacy.secagg.num_shares=3",
            "privacy.secagg.reconstruction_threshold=2", f"registry.root={tmp_path / 'reg'}",
        ]
    )  # fmt: skip
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    task = get_task(config.task.name)
    grid = LoopbackGrid(config, nodes, drop)
    registry = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    try:
        registry.store.create_run(
            RunCreate(
                run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64
            )
        )
        recorder = RoundRecorder(
            registry=registry, run_id="r", model=task.build_model(config.task), base_lineage={}, task=task
        )
        run_secure_rounds(
            grid=grid,
            context=Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
            config=config, recorder=recorder,
            initial_arrays=state_dict_to_arrays(task.build_model(config.task).state_dict()), dp=None,
        )  # fmt: skip
        assert [c.round for c in registry.store.list_checkpoints("r")] == [1]  # the recorder's checkpoint
    finally:
        registry.close()
    keys = list(recorder.model.state_dict())
    aggregate = {k: v.detach().numpy() for k, v in recorder.model.state_dict().items()}
    return grid, aggregate, keys


def _masked_vectors(grid: LoopbackGrid) -> list[list[np.ndarray]]:
    out = []
    for reply in grid.received:
        configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and Key.MASKED_PARAMETERS in configs:
            payload = cast(list[bytes], configs[Key.MASKED_PARAMETERS])
            out.append([bytes_to_ndarray(b) for b in payload])
    return out


def test_the_server_receives_masked_vectors_only_and_recovers_just_their_sum(
    tmp_path: Path, true_updates: dict[int, tuple[list[np.ndarray], int]]
) -> None:
    grid, aggregate, keys = _run(tmp_path, nodes=3, drop=set())

    assert len(true_updates) == 3
    # no reply carries an array record with values: the trained parameters never arrive as arrays
    for reply in grid.received:
        assert all(len(rec) == 0 for rec in reply.content.array_records.values())
    masked = _masked_vectors(grid)
    assert len(masked) == 3
    for vector in masked:
        # SecAgg+ prepends the (masked) weight factor to the first array
        flat_masked = np.concatenate([np.ravel(a).astype(np.float64) for a in vector])[1:]
        for params, _ in true_updates.values():
            flat_true = np.concatenate([np.ravel(a) for a in params]).astype(np.float64)
            # uniformly masked integers: no trace of any client's parameters
            assert abs(np.corrcoef(flat_masked, flat_true)[0, 1]) < 0.1
    # ... while their sum unmasks to the clients' weighted mean (up to SecAgg+'s quantization)
    weights = np.array([n for _, n in true_updates.values()], dtype=np.float64)
    for i, key in enumerate(keys):
        expected = (
            sum(w * p[i] for w, (p, _) in zip(weights, true_updates.values(), strict=True)) / weights.sum()
        )
        np.testing.assert_allclose(aggregate[key], expected, atol=1e-3)


def test_a_dropout_within_the_threshold_still_completes_the_round(
    tmp_path: Path, true_updates: dict[int, tuple[list[np.ndarray], int]]
) -> None:
    grid, aggregate, keys = _run(tmp_path, nodes=4, drop={4})

    # node 4 trained nothing (dropped before the collect stage); the others' mean is the aggregate
    assert len(true_updates) == 3 and len(_masked_vectors(grid)) == 3
    weights = np.array([n for _, n in true_updates.values()], dtype=np.float64)
    for i, key in enumerate(keys):
        expected = (
            sum(w * p[i] for w, (p, _) in zip(weights, true_updates.values(), strict=True)) / weights.sum()
        )
        np.testing.assert_allclose(aggregate[key], expected, atol=1e-3)


@pytest.mark.slow
def test_a_secure_aggregation_simulation_with_central_dp_completes_and_records_both(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            FEDGE, "simulate", "strategy.secure_aggregation=true", "privacy=central",
            "privacy.clipping=client",
            "privacy.target_epsilon=8", "simulation.num_clients=3", "strategy.num_rounds=2",
            "task.local_epochs=1", "drift.enabled=false", f"registry.root={tmp_path / 'reg'}",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reg = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    try:
        (run,) = reg.store.list_runs()
        checkpoints = reg.store.list_checkpoints(run.run_id)
        (version,) = reg.store.list_versions()
    finally:
        reg.close()
    assert [c.round for c in checkpoints] == [1, 2]
    assert version.lineage["secure_aggregation"]["protocol"] == "secagg+"
    privacy = version.lineage["privacy"]
    assert privacy["clipping"] == "client-fixed" and 7.9 < privacy["epsilon"] <= 8.0
    log = (tmp_path / "reg" / "runs" / run.run_id / "flower-run.log").read_text()
    assert log.count("Secure aggregation completed.") == 2
