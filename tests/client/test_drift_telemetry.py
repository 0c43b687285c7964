"""A client's drift reply: only noisy counts, window size and identifiers cross the wire; budget; minimum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from client.drift_telemetry import (
    COUNTS_KEY,
    EDGES_KEY,
    META_KEY,
    MODE_WINDOW,
    QUERY_KEY,
    drift_reply,
    simulated_window,
)
from client.local_data import LocalData
from fedge.config import DriftSettings
from fedge.drift import fixed_bin_edges, histogram_counts
from fedge.errors import PrivacyBudgetError
from fedge.privacy_ledger import PrivacyLedger
from fedge.tasks import Dataset

FEATURES, BINS, CLASSES = 4, 5, 3


def _query(window: int = 0) -> RecordDict:
    edges = fixed_bin_edges(np.full(FEATURES, -3.0), np.full(FEATURES, 3.0), BINS)
    return RecordDict(
        {
            QUERY_KEY: ConfigRecord({"mode": MODE_WINDOW, "window": window, "num_classes": CLASSES}),
            EDGES_KEY: ArrayRecord({"edges": Array(edges)}),
        }
    )


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, FEATURES))


def _ledger(tmp_path: Path, budget: float = 10.0) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "ledger.json", budget_epsilon=budget)


def test_the_reply_carries_only_noisy_counts_the_window_size_and_identifiers(tmp_path: Path) -> None:
    rows = _rows(500)
    settings = DriftSettings(min_window=100, epsilon=1.0)

    reply = drift_reply(
        _query(window=3), rows, _ledger(tmp_path), settings, predict=lambda x: (x[:, 0] > 0).astype(int)
    )

    assert set(reply.keys()) == {COUNTS_KEY, META_KEY}
    counts = reply[COUNTS_KEY]
    assert set(counts.keys()) == {"counts", "class_counts"}
    assert counts["counts"].numpy().shape == (FEATURES, BINS)
    assert counts["class_counts"].numpy().shape == (CLASSES,)
    meta = dict(reply[META_KEY])
    assert set(meta) == {"status", "window", "window_size", "epsilon", "reason"}
    assert meta == {"status": "ok", "window": 3, "window_size": 500, "epsilon": 1.0, "reason": ""}
    exact = histogram_counts(rows, fixed_bin_edges(np.full(FEATURES, -3.0), np.full(FEATURES, 3.0), BINS))
    noisy = counts["counts"].numpy()
    assert not np.array_equal(noisy, exact), "the counts must be noised"
    assert (noisy >= 0).all()
    # Nothing row-shaped or value-valued: every array is a histogram, every scalar an identifier.
    assert all(a.numpy().size in (FEATURES * BINS, CLASSES) for a in counts.values())
    assert not any(isinstance(v, list) for v in meta.values())


def test_a_client_over_its_budget_refuses_and_says_so(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, budget=1.5)
    settings = DriftSettings(min_window=100, epsilon=1.0)

    first = drift_reply(_query(0), _rows(300), ledger, settings)
    second = drift_reply(_query(1), _rows(300), ledger, settings)

    assert first[META_KEY]["status"] == "ok"
    assert set(second.keys()) == {META_KEY}
    assert second[META_KEY]["status"] == "refused"
    assert "budget exhausted" in str(second[META_KEY]["reason"])
    assert ledger.spent_epsilon == pytest.approx(1.0)
    with pytest.raises(PrivacyBudgetError, match=r"1 of 1\.5 is spent") as info:
        PrivacyLedger(ledger.path, budget_epsilon=1.5).spend(1.0, purpose="x")
    assert info.value.code == "privacy_budget_exhausted"


def test_a_window_below_the_minimum_sends_nothing_and_spends_nothing(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)

    reply = drift_reply(_query(), _rows(99), ledger, DriftSettings(min_window=100))

    assert set(reply.keys()) == {META_KEY}
    assert reply[META_KEY]["status"] == "below-min-window"
    assert reply[META_KEY]["window_size"] == 0
    assert ledger.spent_epsilon == 0.0


def test_the_ledger_survives_a_new_process(tmp_path: Path) -> None:
    PrivacyLedger(tmp_path / "l.json", budget_epsilon=5).spend(2.0, purpose="a")
    PrivacyLedger(tmp_path / "l.json", budget_epsilon=5).spend(1.5, purpose="b")

    ledger = PrivacyLedger(tmp_path / "l.json", budget_epsilon=5)

    assert ledger.spent_epsilon == pytest.approx(3.5)
    assert [e.purpose for e in ledger.entries()] == ["a", "b"]


def test_simulated_windows_shift_only_the_configured_clients_from_the_configured_window() -> None:
    x = _rows(400, seed=3).astype(np.float32)
    local = LocalData(
        train=Dataset(x, np.zeros(400, dtype=np.int64)), val=Dataset(x[:0], np.zeros(0, np.int64))
    )
    settings = DriftSettings(window_size=300, shift_clients=[1], shift_size=0.5, shift_from_window=2)

    before = simulated_window(local, settings, partition_id=1, window=1)
    after = simulated_window(local, settings, partition_id=1, window=2)
    other = simulated_window(local, settings, partition_id=0, window=2)

    assert before.shape == (300, FEATURES)
    assert abs(before.mean() - x.mean()) < 0.15
    assert after.mean() - x.mean() == pytest.approx(0.5 * x.std(axis=0).mean(), abs=0.15)
    assert abs(other.mean() - x.mean()) < 0.15
