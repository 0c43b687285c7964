"""Drift beyond flat rows: a release reference and windows for shapes (tensor reduction) and diabetes
(regression: no class histogram), through the real coordinator, client and edge code; an edge device's
count from the manifest alone equals the clients' reduction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message
from flwr.supercore.task_identity import TaskIdentity

from client.drift_telemetry import drift_query_reply
from client.local_data import LocalData
from coordinator.drift.monitor import query_drift, release_reference
from coordinator.drift.reference import feature_ranges, fine_grid, manifest_entry, monitored_features
from edge.drift_push import EdgeDriftWindow
from edge.observe import DriftAccumulator
from fedge.config import DriftSettings, FedgeConfig
from fedge.drift import histogram_counts, psi
from fedge.drift_summary import DriftReference, drift_reduction, reduce_inputs
from fedge.errors import DataError
from fedge.privacy_ledger import PrivacyLedger
from fedge.protocol import MODE_WINDOW
from fedge.serde import state_dict_to_arrays
from fedge.tasks import TaskConfig, get_task

SETTINGS = DriftSettings(min_window=50, window_size=200, epsilon=50.0, reference_epsilon=50.0, num_bins=6)


@dataclass
class InProcessGrid:
    """The Flower grid's two calls, delivering each query to a real client's drift handler in-process."""

    clients: dict[int, LocalData]
    config: FedgeConfig
    ledgers: Path

    def get_node_ids(self) -> list[int]:
        return list(self.clients)

    def send_and_receive(self, messages: Iterable[Message], timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            ledger = PrivacyLedger(self.ledgers / f"{node}.json", budget_epsilon=1e6)
            content = drift_query_reply(
                msg.content, self.config, self.clients[node], ledger=ledger, partition_id=node
            )
            replies.append(Message(content=content, reply_to=msg))
        return replies


@pytest.fixture(autouse=True)
def flower_run_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Messages carry their run id; a ServerApp process has one set by Flower."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    yield


def _grid(tmp_path: Path, task_cfg: TaskConfig, settings: DriftSettings = SETTINGS) -> InProcessGrid:
    pool, _ = get_task(task_cfg.name).split_holdout(task_cfg)
    parts = np.array_split(np.arange(min(len(pool), 900)), 3)
    clients = {
        node: LocalData(train=pool.take(idx[: len(idx) * 3 // 4]), val=pool.take(idx[len(idx) * 3 // 4 :]))
        for node, idx in zip((11, 12, 13), parts, strict=True)
    }
    return InProcessGrid(clients, FedgeConfig(task=task_cfg, drift=settings), tmp_path)


def _release(grid: InProcessGrid) -> DriftReference:
    task_cfg = grid.config.task
    task = get_task(task_cfg.name)
    _, holdout = task.split_holdout(task_cfg)
    reference = release_reference(
        grid, settings=grid.config.drift, task=task, min_nodes=3, model_name=task.name,  # type: ignore[arg-type]
        model_arrays=state_dict_to_arrays(task.build_model(task_cfg).state_dict()), public_rows=holdout.x,
    )  # fmt: skip
    assert reference is not None
    return reference


def test_shapes_reference_counts_the_tensor_reduction_and_its_classes(tmp_path: Path) -> None:
    task_cfg = TaskConfig(name="shapes", model="cnn")
    task = get_task("shapes")
    grid = _grid(tmp_path, task_cfg)

    reference = _release(grid)

    names = list(task.drift_feature_names())
    assert names[:2] == ["channel_mean[0]", "channel_std[0]"] and len(names) == 10
    assert reference.feature_names == names and reference.features == list(range(10))
    assert reference.edges.shape == (10, SETTINGS.num_bins + 1)
    assert reference.class_counts is not None and reference.class_counts.shape == (4,)
    assert reference.reduction == drift_reduction(task.drift, task.input_spec)
    train_rows = sum(len(c.train) for c in grid.clients.values())
    np.testing.assert_allclose(reference.counts.sum(axis=1), train_rows, rtol=0.05)
    entry = manifest_entry(reference)
    assert entry["reduction"]["input"] == {"kind": "tensor", "shape": [1, 28, 28]}


def test_a_brightened_shapes_site_moves_the_channel_mean_in_its_window(tmp_path: Path) -> None:
    settings = DriftSettings(**{**SETTINGS.__dict__, "shift_clients": [11], "shift_size": 2.0})
    grid = _grid(tmp_path, TaskConfig(name="shapes", model="cnn"), settings)
    reference = _release(grid)

    def window(index: int) -> np.ndarray:
        replies = query_drift(
            grid, mode=MODE_WINDOW, edges=reference.edges, features=reference.features,  # type: ignore[arg-type]
            num_classes=reference.num_classes, window=index, min_nodes=3,
        )  # fmt: skip
        (shifted,) = [r for r in replies if r.node_id == 11]
        assert shifted.counts is not None
        return psi(reference.counts, shifted.counts)

    before, after = window(0), window(1)

    assert before[0] < 0.2 < after[0], "channel_mean[0] flags only once the site is shifted"


def test_diabetes_reference_and_windows_carry_no_class_histogram(tmp_path: Path) -> None:
    task_cfg = TaskConfig(name="diabetes")
    grid = _grid(tmp_path, task_cfg)

    reference = _release(grid)
    replies = query_drift(
        grid, mode=MODE_WINDOW, edges=reference.edges, features=reference.features,  # type: ignore[arg-type]
        num_classes=reference.num_classes, window=0, min_nodes=3,
    )  # fmt: skip

    assert reference.class_counts is None and reference.num_classes == 0
    assert reference.feature_names == list(get_task("diabetes").input_spec.feature_names)
    assert len(replies) == 3 and all(r.status == "ok" and r.class_counts is None for r in replies)
    assert all(r.counts is not None and r.counts.shape == reference.counts.shape for r in replies)


def test_drift_feature_ranges_follow_the_reductions() -> None:
    lo, hi = feature_ranges(get_task("shapes"))

    np.testing.assert_array_equal(lo, np.zeros(10))
    np.testing.assert_array_equal(hi, [1.0, 0.5, *([1.0] * 8)])
    grid = fine_grid(get_task("diabetes"), [0, 9], 20, public_rows=np.zeros((3, 10)))
    assert grid[:, 0].tolist() == [-1.0, -1.0] and grid[:, -1].tolist() == [1.0, 1.0]
    with pytest.raises(DataError, match=r"beyond task 'shapes''s 10 drift features .*\[0, 10\)"):
        monitored_features(DriftSettings(features=[10]), get_task("shapes"))


def test_an_edge_count_from_the_manifest_equals_the_clients_reduction(tmp_path: Path) -> None:
    task = get_task("shapes")
    x = task.load_dataset().x[:300]
    features = [0, 1, 4, 7]
    values = task.drift_features(x)[:, features]
    edges = np.stack([np.linspace(v.min() - 1e-3, v.max() + 1e-3, 6) for v in values.T])
    reference = DriftReference(
        "shapes", 1, features, [task.drift_feature_names()[i] for i in features], edges,
        histogram_counts(values, edges).astype(float), None, 1.0, 3,
        reduction=drift_reduction(task.drift, task.input_spec),
    )  # fmt: skip
    manifest = {"preprocessing": {"drift": manifest_entry(reference), "value_range": [0.0, 1.0]}}
    window = EdgeDriftWindow(
        manifest["preprocessing"]["drift"], model="shapes", version=1, site="d", settings=SETTINGS,
        ledger=PrivacyLedger(tmp_path / "l.json", budget_epsilon=10),
    )  # fmt: skip
    accumulator = DriftAccumulator.from_manifest(manifest, width=784, features=[])

    window.add(x)
    accumulator.add(x)

    np.testing.assert_array_equal(window.counts, histogram_counts(values, edges))
    assert accumulator.features == list(task.drift_feature_names())
    np.testing.assert_array_equal(
        accumulator.counts, histogram_counts(task.drift_features(x), accumulator.edges)
    )
    np.testing.assert_array_equal(reduce_inputs(reference.reduction, x), task.drift_features(x))
    with pytest.raises(DataError, match=r"\[rows, 28, 28\] but the release counts \[rows, 1, 28, 28\]"):
        reduce_inputs(reference.reduction, x[:, 0])
