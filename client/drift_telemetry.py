"""A client's drift telemetry: answer a ``query.drift`` with noisy counts, within its own privacy budget.

What leaves the client is exactly: the noisy counts (``counts``, ``class_counts``), the window size, the
window index, the epsilon spent and a status. Never a row, a per-record value, a mean or an extreme.
The counted values are the task's drift features (``Task.drift_features``: a tabular row's values or a
tensor's declared reduction); predicted classes are counted only for classification targets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from client.local_data import LocalData
from fedge.config import DriftSettings, FedgeConfig
from fedge.drift_summary import noisy_histograms, record_array, record_value
from fedge.errors import DataError, FedgeError
from fedge.privacy_ledger import PrivacyLedger
from fedge.protocol import (
    ARRAYS_KEY,
    COUNTS_KEY,
    EDGES_KEY,
    META_KEY,
    MODE_REFERENCE,
    MODE_REFERENCE_FINE,
    MODE_WINDOW,
    QUERY_KEY,
)
from fedge.tasks import Dataset

__all__ = [
    "COUNTS_KEY",
    "EDGES_KEY",
    "META_KEY",
    "MODE_REFERENCE",
    "MODE_REFERENCE_FINE",
    "MODE_WINDOW",
    "QUERY_KEY",
    "drift_query_reply",
    "drift_reply",
    "ledger_for",
    "shift_rows",
    "simulated_current_data",
    "simulated_window",
]

log = logging.getLogger(__name__)


def ledger_for(node_config: dict[str, Any], settings: DriftSettings, default_dir: Path) -> PrivacyLedger:
    """The client's ledger: ``node_config['drift-ledger']`` and ``['drift-budget-epsilon']`` when the
    institution sets them (its own budget), else a per-partition file under ``default_dir``."""
    path = (
        node_config.get("drift-ledger") or default_dir / f"client-{node_config.get('partition-id', 0)}.json"
    )
    budget = float(node_config.get("drift-budget-epsilon", settings.budget_epsilon))
    return PrivacyLedger(Path(str(path)), budget_epsilon=budget)


def simulated_window(
    local: LocalData, settings: DriftSettings, *, partition_id: int, window: int
) -> np.ndarray:
    """A simulation client's recent window: a seeded sample of its examples, covariate-shifted if
    configured.

    Clients listed in ``settings.shift_clients`` add ``shift_size`` standard deviations (their own, per
    input value) to every input value from window ``shift_from_window`` on.
    """
    x = np.concatenate([local.train.x, local.val.x]) if len(local.val) else local.train.x
    rng = np.random.default_rng([window, partition_id, 7013])
    take = rng.permutation(len(x))[: min(settings.window_size, len(x))]
    rows = np.asarray(x[np.sort(take)], dtype=np.float64)
    if partition_id in settings.shift_clients and window >= settings.shift_from_window:
        rows = shift_rows(rows, settings.shift_size, reference=x)
    return rows


def drift_query_reply(
    content: RecordDict,
    config: FedgeConfig,
    local: LocalData | np.ndarray,
    *,
    ledger: PrivacyLedger,
    partition_id: int = 0,
) -> RecordDict:
    """:func:`drift_reply` with the run's drift settings, counting the task's drift features of the
    examples and, when the query carries the model's weights and the task is a classification, its
    predicted classes (torch is loaded only then)."""
    from fedge.tasks import get_task

    settings, task_cfg = config.drift, config.task
    task = get_task(task_cfg.name)
    predict = None
    if ARRAYS_KEY in content and task.target.is_classification:
        from fedge.serde import state_dict_from_arrays
        from fedge.tasks.training import load_weights, predict_outputs

        model = task.build_model(task_cfg)
        load_weights(model, state_dict_from_arrays(content[ARRAYS_KEY]))  # type: ignore[arg-type]

        def predict(rows: np.ndarray) -> np.ndarray:
            return predict_outputs(model, rows).argmax(-1)

    return drift_reply(
        content, local, ledger, settings, predict=predict, partition_id=partition_id,
        features_of=task.drift_features,
    )  # fmt: skip


def simulated_current_data(local: LocalData, settings: DriftSettings, partition_id: int) -> LocalData:
    """A simulation client's data as it is now: shifted when ``drift.shift_active`` and this client is one
    of ``drift.shift_clients`` (a retraining after the shift trains on the shifted data)."""
    if not settings.shift_active or partition_id not in settings.shift_clients:
        return local
    ref = np.concatenate([local.train.x, local.val.x]) if len(local.val) else local.train.x

    def shifted(d: Dataset) -> Dataset:
        return Dataset(shift_rows(d.x, settings.shift_size, reference=ref).astype(np.float32), d.y)

    return LocalData(train=shifted(local.train), val=shifted(local.val))


def shift_rows(rows: np.ndarray, size: float, *, reference: np.ndarray) -> np.ndarray:
    """Covariate shift: ``rows + size * std(reference)`` per input value (rows ``[n, *shape]``)."""
    return rows + size * np.asarray(reference, dtype=np.float64).std(axis=0)


def _status(
    status: str, *, window: int, window_size: int = 0, epsilon: float = 0.0, reason: str = ""
) -> ConfigRecord:
    return ConfigRecord(
        {"status": status, "window": window, "window_size": window_size, "epsilon": epsilon, "reason": reason}
    )


def drift_reply(
    content: RecordDict,
    data: LocalData | np.ndarray,
    ledger: PrivacyLedger,
    settings: DriftSettings,
    *,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    partition_id: int = 0,
    rng: np.random.Generator | None = None,
    features_of: Callable[[np.ndarray], np.ndarray] | None = None,
) -> RecordDict:
    """Answer one drift query.

    Parameters
    ----------
    content : RecordDict
        The query: ``drift.query`` (mode, window, num_classes) and ``drift.edges``.
    data : LocalData or np.ndarray
        The client's data (the window is chosen from it by mode) or the window itself
        (``[rows, *input shape]``).
    ledger : PrivacyLedger
        Spent before anything leaves; a spend beyond the budget is refused and nothing is sent.
    settings : DriftSettings
        Mechanism, epsilon, contribution bound, minimum window.
    predict : callable, optional
        Predicted class per row, for the predicted-class histogram (omitted when ``None``).
    features_of : callable, optional
        Examples ``[rows, *shape]`` -> drift features ``[rows, features]`` (``Task.drift_features``);
        ``None`` counts the rows as they are (``[rows, features]``).

    Returns
    -------
    RecordDict
        ``drift.meta`` (status ``ok``, ``refused`` or ``below-min-window``); ``drift.counts`` when ok.
    """
    query = content[QUERY_KEY]
    mode, window = str(record_value(query, "mode")), int(record_value(query, "window", 0))
    num_classes = int(record_value(query, "num_classes", 0))
    edges = record_array(content[EDGES_KEY], "edges")
    features = [int(i) for i in (record_value(query, "features") or [])]
    if isinstance(data, np.ndarray):
        rows = data
    elif mode == MODE_WINDOW:
        rows = simulated_window(data, settings, partition_id=partition_id, window=window)
    else:
        rows = data.train.x
    if len(rows) < settings.min_window:
        # Below the minimum nothing is counted, spent or sent.
        log.info(
            "drift window %d has %d rows < min_window %d: sending nothing",
            window,
            len(rows),
            settings.min_window,
        )
        return RecordDict(
            {META_KEY: _status("below-min-window", window=window, reason="window below minimum")}
        )
    epsilon = settings.reference_epsilon if mode != MODE_WINDOW else settings.epsilon
    delta = settings.delta if settings.mechanism == "gaussian" else 0.0
    try:
        values = np.asarray(features_of(rows) if features_of is not None else rows, dtype=np.float64)
        if values.ndim != 2:
            raise DataError(
                f"the drift window has shape {list(values.shape)}, not [rows, features]: the task's "
                "examples need their drift reduction (Task.drift_features)"
            )
        if features and max(features) >= values.shape[1]:
            raise DataError(
                f"the query counts drift feature {max(features)} but this client's examples have "
                f"{values.shape[1]}: the client's task does not match the run's"
            )
        monitored = values[:, features] if features else values
        if monitored.shape[1] != edges.shape[0]:
            raise DataError(
                f"the query has edges for {edges.shape[0]} features but the window has {monitored.shape[1]}"
            )
        predicted = predict(rows) if (predict is not None and num_classes > 0) else None
        ledger.spend(epsilon, purpose=f"drift {mode} window {window}", delta=delta)
    except FedgeError as exc:
        log.warning("drift query refused: %s", exc)
        return RecordDict({META_KEY: _status("refused", window=window, reason=str(exc))})
    counts, class_counts = noisy_histograms(
        monitored,
        edges,
        predicted,
        num_classes,
        settings,
        epsilon=epsilon,
        rng=rng or np.random.default_rng(),
    )
    arrays = {"counts": Array(counts)}
    if class_counts is not None:
        arrays["class_counts"] = Array(class_counts)
    return RecordDict(
        {
            COUNTS_KEY: ArrayRecord(arrays),
            META_KEY: _status("ok", window=window, window_size=len(rows), epsilon=epsilon),
        }
    )
