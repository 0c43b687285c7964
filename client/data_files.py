"""An institution's own data file: read it, validate it against the task, fingerprint it, split it.

A client agent trains on one file. Tabular tasks: CSV (comma separated, a header row, UTF-8) or Parquet
with the feature columns ``task.data`` declares and the target: an integer class in ``label_column``
(classification) or real values in ``target_columns`` (regression; default ``[label_column]``). Any
task: NPZ with arrays ``x`` (``[rows, *input_spec.shape]``) and ``y`` (``[rows]`` labels, or
``[rows]``/``[rows, outputs]`` regression targets). Everything is checked against the task's input
spec and target before any training, and the first problem is reported as a
:class:`~fedge.errors.DataError` naming the file, the row, the column or index (``x[12, 0, 3, 4]``)
and what is wrong (with the count of further problems).

Conventions:

- Rows are numbered from 1, counting data rows only: row 1 is the first row after a CSV's header
  (blank lines are skipped), or ``x[0]`` in an NPZ. For CSV the physical line is given too, as a text
  editor shows it: ``row 7 (line 8)``.
- Columns beyond the declared ones are ignored: an institution's export usually carries identifiers
  and other fields, and only the declared columns are read (nothing else is used or sent anywhere).
- An empty cell, a Parquet null or a ``NaN`` is a missing value (inputs and targets alike):
  ``nan_policy="reject"`` makes it an error, ``"drop_rows"`` skips its row. Text that is not a number
  is always an error.

The fingerprint is the sha256 of the validated content, not of the file's bytes: the input's shape
(``[rows, *shape]``), then each kept example's values in model order as little-endian float64 (rows in
file order), then the targets: class labels as little-endian int64, or regression targets as their
shape ``[rows, outputs]`` and little-endian float64 values. The same table therefore fingerprints the
same whether it is stored as CSV, Parquet or NPZ (or whatever the column order and extra columns in
the file), and any changed value or row order changes it; a coordinator can tell that a client trained
on the same data as last time without seeing it.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.data_readers import (
    SUFFIXES,
    FileLayout,
    RawTable,
    check_suffix,
    file_layout,
    pyarrow_modules,
    read_table,
)
from client.local_data import LocalData
from fedge.errors import ConflictError, DataError
from fedge.tasks import Dataset, TaskConfig, get_task

__all__ = ["SUFFIXES", "ClientData", "dataset_fingerprint", "load_client_data", "write_client_file"]

_FINGERPRINT_VERSION = b"fedge-client-data-v1"
_REGRESSION_TAG = b"regression-targets-f8"


@dataclass(frozen=True)
class ClientData(LocalData):
    """A validated data file split into train and val, with what a client may report about it.

    Attributes
    ----------
    fingerprint : str
        sha256 (hex) of the validated content (see the module docstring).
    num_rows : int
        Rows used (train + val).
    dropped_rows : int
        Rows skipped for missing values under ``nan_policy="drop_rows"``.
    """

    fingerprint: str
    num_rows: int
    dropped_rows: int = 0


def load_client_data(path: str | Path, task: TaskConfig, *, val_fraction: float, seed: int) -> ClientData:
    """Read, validate and fingerprint an institution's data file, and split it into train and val.

    Parameters
    ----------
    path : path-like
        A ``.csv`` or ``.parquet`` file (tabular tasks) or a ``.npz`` file (any task).
    task : TaskConfig
        The run's task; ``task.data`` declares the columns, range, missing-value policy and minimum rows.
    val_fraction : float
        Share of rows held out for validation (none when the file has fewer than 5 rows).
    seed : int
        Seed of the split, so every round of a run splits the same way.

    Returns
    -------
    ClientData
        ``x`` float32 ``[rows, *input_spec.shape]``; ``y`` int64 ``[rows]`` class labels or float32
        ``[rows, outputs]`` regression targets.

    Raises
    ------
    DataError
        If the file cannot be read or any value breaks the task's specs; the message names the file,
        row and column or index, and how many other problems there are.
    ConfigError
        If ``task.data`` itself is inconsistent with the task.
    """
    path = Path(path)
    layout = file_layout(task, get_task(task.name))
    table = read_table(path, layout)
    x, y, dropped = _validate(path, table, layout, task.data.nan_policy)
    if len(y) < task.data.min_rows:
        because = f" after dropping {dropped} with missing values" if dropped else ""
        raise DataError(
            f"{path}: {len(y)} usable rows{because}, fewer than task.data.min_rows={task.data.min_rows}: "
            "too few to train on; add rows or lower task.data.min_rows"
        )
    x = x.reshape(len(x), *layout.shape)
    fingerprint = _fingerprint(x, y)
    data = Dataset(x.astype(np.float32), y if layout.classification else y.astype(np.float32))
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = round(len(data) * val_fraction) if len(data) >= 5 else 0
    return ClientData(
        train=data.take(np.sort(order[n_val:])),
        val=data.take(np.sort(order[:n_val])),
        fingerprint=fingerprint,
        num_rows=len(data),
        dropped_rows=dropped,
    )


def dataset_fingerprint(*parts: Dataset) -> str:
    """Return the sha256 (hex) of examples and targets, hashed as :func:`load_client_data` does.

    ``parts`` are hashed as one table, in order (``dataset_fingerprint(train, val)``). Integer ``y``
    are class labels, float ``y`` regression targets. For a data file's rows in file order this is
    the fingerprint :func:`load_client_data` reports.
    """
    if not parts:
        return _fingerprint(np.empty((0, 0)), np.empty(0, dtype=np.int64))
    x = np.concatenate([np.asarray(p.x, dtype=np.float64) for p in parts])
    y = np.concatenate([np.asarray(p.y) for p in parts])
    return _fingerprint(x, y)


def _fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    features = np.ascontiguousarray(x, dtype="<f8") + 0.0  # + 0.0 folds -0.0 into 0.0
    digest = hashlib.sha256(_FINGERPRINT_VERSION)
    digest.update(np.array(features.shape, dtype="<i8").tobytes())
    digest.update(features.tobytes())
    if y.dtype.kind in "iub":  # class labels: as before regression targets existed
        digest.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    else:
        targets = np.ascontiguousarray(y, dtype="<f8").reshape(len(y), -1) + 0.0
        digest.update(_REGRESSION_TAG)
        digest.update(np.array(targets.shape, dtype="<i8").tobytes())
        digest.update(targets.tobytes())
    return digest.hexdigest()


def write_client_file(
    path: str | Path, dataset: Dataset, task: TaskConfig, *, overwrite: bool = False
) -> Path:
    """Write ``dataset`` as the institution file ``task.data`` declares (CSV, Parquet or NPZ by suffix).

    Values are written with the exact float64 value of each stored number, so the file reads back
    to the same examples (and fingerprint) in every format. Tensor tasks are written as NPZ only.
    Used to turn a simulation partition into an institution's file for tests, benchmarks and demos.

    Raises
    ------
    ConflictError
        If ``path`` exists and ``overwrite`` is false.
    ConfigError
        For an unsupported suffix, or a table format for a tensor task.
    """
    path = Path(path)
    layout = file_layout(task, get_task(task.name))
    suffix = check_suffix(path, layout)
    if path.exists() and not overwrite:
        raise ConflictError(f"{path} already exists; refusing to overwrite it (pass overwrite=True)")
    if suffix == ".npz":
        with path.open("wb") as fh:
            np.savez(fh, x=dataset.x, y=dataset.y)
        return path
    x = np.asarray(dataset.x, dtype=np.float64).reshape(len(dataset), -1)
    if layout.classification:
        y: np.ndarray = np.asarray(dataset.y, dtype=np.int64).reshape(len(dataset), 1)
    else:
        y = np.asarray(dataset.y, dtype=np.float64).reshape(len(dataset), -1)
    if suffix == ".csv":
        text = repr if not layout.classification else str
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(layout.names)
            for row, target in zip(x.tolist(), y.tolist(), strict=True):
                writer.writerow([*map(repr, row), *map(text, target)])
    else:
        pa, pq = pyarrow_modules()
        arrays = {name: pa.array(x[:, j]) for j, name in enumerate(layout.features)}
        arrays |= {name: pa.array(y[:, j]) for j, name in enumerate(layout.targets)}
        pq.write_table(pa.table(arrays), path)
    return path


def _validate(
    path: Path, table: RawTable, layout: FileLayout, nan_policy: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """The kept inputs (flat), targets and number of dropped rows, or raise on the first problem."""
    values, k = table.values, layout.width
    missing = np.isnan(values) & ~table.not_a_number
    drop = missing.any(axis=1) if nan_policy == "drop_rows" else np.zeros(len(values), bool)
    features, targets = values[:, :k], values[:, k:]
    with np.errstate(invalid="ignore"):
        problems = table.not_a_number | missing
        problems[:, :k] |= ~np.isnan(features) & ((features < layout.low) | (features > layout.high))
        problems[:, :k] |= np.isinf(features)
        if layout.classification:
            problems[:, k:] |= ~np.isnan(targets) & (
                (targets != np.floor(targets)) | (targets < 0) | (targets >= layout.num_classes)
            )
        else:
            problems[:, k:] |= np.isinf(targets)
    problems[drop] = False
    count = int(problems.sum())
    if count:
        r, c = map(int, np.argwhere(problems)[0])  # row-major: the first problem reading the file
        others = f" ({count - 1} more problem{'s' if count > 2 else ''} in the file)" if count > 1 else ""
        raise DataError(
            f"{path}, row {r + 1}{table.where(r)}, {layout.position(c).format(r=r)}: "
            f"{_describe(table, layout, r, c, nan_policy)}{others}"
        )
    keep = ~drop
    kept = targets[keep]
    y = kept[:, 0].astype(np.int64) if layout.classification else kept
    return features[keep], y, int(drop.sum())


def _describe(table: RawTable, layout: FileLayout, r: int, c: int, nan_policy: str) -> str:
    value = float(table.values[r, c])
    is_target = c >= layout.width
    if table.not_a_number[r, c]:
        return f"{table.text_at(r, c)!r} is not a number"
    if math.isnan(value):
        what = "missing value" if not is_target or layout.classification else "missing (NaN) target"
        return (
            f"{what}, and task.data.nan_policy is {nan_policy!r}: fill it in, or set "
            "task.data.nan_policy=drop_rows to skip such rows"
        )
    if is_target and layout.classification:
        names = ", ".join(layout.class_names[:4]) + (", ..." if layout.num_classes > 4 else "")
        return (
            f"label {value:g} is not an integer class in [0, {layout.num_classes}) "
            f"(task {layout.task!r} declares classes {names})"
        )
    if math.isinf(value):
        return f"{value} is not a finite number"
    bound = (
        f"below the minimum {layout.low:g}" if value < layout.low else f"above the maximum {layout.high:g}"
    )
    return f"value {value:g} is {bound} (task.data.min_value/max_value, or the task's declared range)"
