"""An institution's own data file: read it, validate it against the task, fingerprint it, split it.

A client agent trains on one file: CSV (comma separated, a header row, UTF-8) or Parquet with the
columns ``task.data`` declares, or NPZ with arrays ``x`` ([rows, features], features in the declared
order) and ``y`` ([rows], labels). Everything is checked before any training, and the first problem is
reported as a :class:`~fedge.errors.DataError` naming the file, the row, the column and what is wrong
(with the count of further problems).

Conventions:

- Rows are numbered from 1, counting data rows only: row 1 is the first row after a CSV's header
  (blank lines are skipped), or ``x[0]`` in an NPZ. For CSV the physical line is given too, as a text
  editor shows it: ``row 7 (line 8)``.
- Columns beyond the declared ones are ignored: an institution's export usually carries identifiers
  and other fields, and only the declared columns are read (nothing else is used or sent anywhere).
- An empty cell, a Parquet null or a ``NaN`` is a missing value: ``nan_policy="reject"`` makes it an
  error, ``"drop_rows"`` skips its row. Text that is not a number is always an error.

The fingerprint is the sha256 of the validated content, not of the file's bytes: the table's shape,
then each kept row's features in schema order as little-endian float64 (rows in file order), then the
labels as little-endian int64. The same table therefore fingerprints the same whether it is stored as
CSV, Parquet or NPZ (or whatever the column order and extra columns in the file), and any changed value
or row order changes it; a coordinator can tell that a client trained on the same data as last time
without seeing it.
"""

from __future__ import annotations

import csv
import hashlib
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client.local_data import LocalData
from fedge.errors import ConfigError, ConflictError, DataError
from fedge.tasks import NAN_POLICIES, Dataset, TaskConfig, get_task

__all__ = ["SUFFIXES", "ClientData", "dataset_fingerprint", "load_client_data", "write_client_file"]

SUFFIXES = (".csv", ".parquet", ".npz")
_FINGERPRINT_VERSION = b"fedge-client-data-v1"


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


@dataclass(frozen=True)
class _Columns:
    """What the task reads from a file: feature column names in model order, then the label's."""

    features: tuple[str, ...]
    label: str
    num_classes: int
    low: float
    high: float

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.features, self.label)


@dataclass
class _Table:
    """The declared columns as float64 ``[rows, features + 1]`` (label last), and where text failed."""

    values: np.ndarray
    not_a_number: np.ndarray  # bool, same shape: a cell held text that is not a number
    text_at: Callable[[int, int], str]
    where: Callable[[int], str]  # " (line 8)" for CSV, "" otherwise


def load_client_data(path: str | Path, task: TaskConfig, *, val_fraction: float, seed: int) -> ClientData:
    """Read, validate and fingerprint an institution's data file, and split it into train and val.

    Parameters
    ----------
    path : path-like
        A ``.csv``, ``.parquet`` or ``.npz`` file.
    task : TaskConfig
        The run's task; ``task.data`` declares the columns, range, missing-value policy and minimum rows.
    val_fraction : float
        Share of rows held out for validation (none when the file has fewer than 5 rows).
    seed : int
        Seed of the split, so every round of a run splits the same way.

    Raises
    ------
    DataError
        If the file cannot be read or any value breaks the schema; the message names the file, row and
        column, and how many other problems there are.
    ConfigError
        If ``task.data`` itself is inconsistent with the task.
    """
    path = Path(path)
    columns = _columns(task)
    table = _read(path, columns)
    x, y, dropped = _validate(path, table, columns, task.data.nan_policy)
    if len(y) < task.data.min_rows:
        because = f" after dropping {dropped} with missing values" if dropped else ""
        raise DataError(
            f"{path}: {len(y)} usable rows{because}, fewer than task.data.min_rows={task.data.min_rows}: "
            "too few to train on; add rows or lower task.data.min_rows"
        )
    fingerprint = _fingerprint(x, y)
    data = Dataset(x.astype(np.float32), y)
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
    """Return the sha256 (hex) of rows: features as little-endian float64, then labels as int64.

    ``parts`` are hashed as one table, in order (``dataset_fingerprint(train, val)``). For a data file's
    rows in file order this is the fingerprint :func:`load_client_data` reports.
    """
    x = np.concatenate([np.asarray(p.x, dtype=np.float64) for p in parts]) if parts else np.empty((0, 0))
    y = np.concatenate([np.asarray(p.y) for p in parts]) if parts else np.empty(0)
    return _fingerprint(x, y)


def _fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    features = np.ascontiguousarray(x, dtype="<f8") + 0.0  # + 0.0 folds -0.0 into 0.0
    digest = hashlib.sha256(_FINGERPRINT_VERSION)
    digest.update(np.array(features.shape, dtype="<i8").tobytes())
    digest.update(features.tobytes())
    digest.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return digest.hexdigest()


def write_client_file(
    path: str | Path, dataset: Dataset, task: TaskConfig, *, overwrite: bool = False
) -> Path:
    """Write ``dataset`` as the institution file ``task.data`` declares (CSV, Parquet or NPZ by suffix).

    Features are written with the exact float64 value of each stored number, so the file reads back
    to the same rows (and fingerprint) in every format. Used to turn a simulation partition into an
    institution's file for tests, benchmarks and demos.

    Raises
    ------
    ConflictError
        If ``path`` exists and ``overwrite`` is false.
    ConfigError
        For an unsupported suffix.
    """
    path = Path(path)
    suffix = _suffix(path)
    if path.exists() and not overwrite:
        raise ConflictError(f"{path} already exists; refusing to overwrite it (pass overwrite=True)")
    columns = _columns(task)
    x, y = np.asarray(dataset.x, dtype=np.float64), np.asarray(dataset.y, dtype=np.int64)
    if suffix == ".npz":
        with path.open("wb") as fh:
            np.savez(fh, x=dataset.x, y=dataset.y)
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns.names)
            for row, label in zip(x.tolist(), y.tolist(), strict=True):
                writer.writerow([*map(repr, row), label])
    else:
        pa, pq = _pyarrow()
        arrays = {name: pa.array(x[:, j]) for j, name in enumerate(columns.features)}
        pq.write_table(pa.table({**arrays, columns.label: pa.array(y)}), path)
    return path


def _columns(task: TaskConfig) -> _Columns:
    spec, schema = task.data, get_task(task.name).schema
    features = tuple(spec.feature_columns) or schema.feature_names
    if len(features) != schema.num_features:
        raise ConfigError(
            f"task.data.feature_columns lists {len(features)} columns but task {task.name!r} takes "
            f"{schema.num_features} features: list one column per feature, in model input order"
        )
    names = (*features, spec.label_column)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"task.data names column(s) {duplicates} more than once (features and label)")
    if spec.nan_policy not in NAN_POLICIES:
        raise ConfigError(
            f"task.data.nan_policy must be one of {', '.join(NAN_POLICIES)}, got {spec.nan_policy!r}"
        )
    if spec.min_rows < 1:
        raise ConfigError(f"task.data.min_rows must be >= 1, got {spec.min_rows}")
    low = schema.value_min if spec.min_value is None else float(spec.min_value)
    high = schema.value_max if spec.max_value is None else float(spec.max_value)
    if low > high:
        raise ConfigError(f"task.data.min_value {low} is above task.data.max_value {high}")
    return _Columns(features, spec.label_column, schema.num_classes, low, high)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"{path}: unsupported data file type {path.suffix or '(no suffix)'!r}: use one of "
            f"{', '.join(SUFFIXES)} (CSV or Parquet with the task's columns, NPZ with arrays x and y)"
        )
    return suffix


def _read(path: Path, columns: _Columns) -> _Table:
    suffix = _suffix(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    reader = {".csv": _read_csv, ".parquet": _read_parquet, ".npz": _read_npz}[suffix]
    return reader(path, columns)


def _require_columns(path: Path, header: list[str], columns: _Columns, hint: str = "") -> list[int]:
    repeated = sorted({h for h in header if header.count(h) > 1 and h in columns.names})
    if repeated:
        raise DataError(f"{path}: column {repeated[0]!r} appears more than once in the header; keep one")
    missing = [n for n in columns.names if n not in header]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"{path}: column {missing[0]!r} is missing{more}; the task reads columns "
            f"{', '.join(columns.features[:3])}, ... ({len(columns.features)} features) and label "
            f"{columns.label!r} (extra columns are ignored){hint}"
        )
    return [header.index(n) for n in columns.names]


def _parse_text(cells: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """float64 values of text cells (empty or None -> NaN) and where the text was not a number."""
    try:  # fast path: every cell is a number
        return np.fromiter(map(float, cells), np.float64, len(cells)), np.zeros(len(cells), bool)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        pass
    values, bad = np.full(len(cells), np.nan), np.zeros(len(cells), bool)
    for i, cell in enumerate(cells):
        text = (cell or "").strip()
        if text:
            try:
                values[i] = float(text)
            except ValueError:
                bad[i] = True
    return values, bad


def _read_csv(path: Path, columns: _Columns) -> _Table:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows, lines = [], []
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue  # a blank line
                rows.append(record)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from None
    if header is None:
        raise DataError(f"{path} is empty: it needs a header row naming the columns, then the data rows")
    header = [h.strip() for h in header]
    hint = "; the file must be comma separated" if len(header) == 1 and ";" in header[0] else ""
    index = _require_columns(path, header, columns, hint)
    for r, record in enumerate(rows):
        if len(record) != len(header):
            raise DataError(
                f"{path}, row {r + 1} (line {lines[r]}): {len(record)} fields, but the header has "
                f"{len(header)}; check for a missing or extra comma"
            )
    parsed = [_parse_text([record[i] for record in rows]) for i in index]
    values = np.stack([p[0] for p in parsed], axis=1) if rows else np.empty((0, len(index)))
    bad = np.stack([p[1] for p in parsed], axis=1) if rows else np.empty((0, len(index)), bool)
    return _Table(values, bad, lambda r, c: rows[r][index[c]].strip(), lambda r: f" (line {lines[r]})")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ConfigError(
            "reading Parquet needs pyarrow, which comes with fedge[server]: pip install pyarrow"
        ) from None
    return pa, pq


def _read_parquet(path: Path, columns: _Columns) -> _Table:
    pa, pq = _pyarrow()
    try:
        header = list(pq.read_schema(path).names)
        _require_columns(path, header, columns)
        table = pq.read_table(path, columns=list(columns.names))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    values, bad, texts = [], [], {}
    for j, name in enumerate(columns.names):
        column = table.column(name)
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            values.append(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
            bad.append(np.zeros(len(column), bool))
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            texts[j] = column.to_pylist()
            parsed, not_number = _parse_text(texts[j])
            values.append(parsed)
            bad.append(not_number)
        else:
            raise DataError(
                f"{path}: column {name!r} has Parquet type {kind}, not numbers; store it as a number"
            )
    return _Table(
        np.stack(values, axis=1),
        np.stack(bad, axis=1),
        lambda r, c: str(texts[c][r]).strip() if c in texts else "",
        lambda r: "",
    )


def _read_npz(path: Path, columns: _Columns) -> _Table:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ("x", "y") if key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable NPZ file of plain arrays ({exc})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(
                f"{path}: array {key!r} is missing; an NPZ data file holds x [rows, features] and y [rows]"
            )
        if arrays[key].dtype.kind not in "iuf":
            raise DataError(f"{path}: array {key!r} has dtype {arrays[key].dtype}, not integers or floats")
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 2 or x.shape[1] != len(columns.features):
        raise DataError(
            f"{path}: array 'x' has shape {x.shape}, the task takes [rows, {len(columns.features)}] "
            f"(features {columns.features[0]!r}, ... in model order)"
        )
    if y.shape != (len(x),):
        raise DataError(
            f"{path}: array 'y' has shape {y.shape}, it must be [{len(x)}], one label per row of x"
        )
    values = np.concatenate([x.astype(np.float64), y.astype(np.float64)[:, None]], axis=1)
    return _Table(values, np.zeros(values.shape, bool), lambda r, c: "", lambda r: "")


def _validate(
    path: Path, table: _Table, columns: _Columns, nan_policy: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Return the kept features, labels and the number of dropped rows, or raise on the first problem."""
    values, k = table.values, len(columns.features)
    missing = np.isnan(values) & ~table.not_a_number
    drop = missing.any(axis=1) if nan_policy == "drop_rows" else np.zeros(len(values), bool)
    features, labels = values[:, :k], values[:, k]
    with np.errstate(invalid="ignore"):
        problems = table.not_a_number | missing
        problems[:, :k] |= ~np.isnan(features) & ((features < columns.low) | (features > columns.high))
        problems[:, :k] |= np.isinf(features)
        problems[:, k] |= ~np.isnan(labels) & (
            (labels != np.floor(labels)) | (labels < 0) | (labels >= columns.num_classes)
        )
    problems[drop] = False
    count = int(problems.sum())
    if count:
        r, c = map(int, np.argwhere(problems)[0])  # row-major: the first problem reading the file
        others = f" ({count - 1} more problem{'s' if count > 2 else ''} in the file)" if count > 1 else ""
        raise DataError(
            f"{path}, row {r + 1}{table.where(r)}, column {columns.names[c]!r}: "
            f"{_describe(table, columns, r, c, nan_policy)}{others}"
        )
    keep = ~drop
    return features[keep], labels[keep].astype(np.int64), int(drop.sum())


def _describe(table: _Table, columns: _Columns, r: int, c: int, nan_policy: str) -> str:
    value = float(table.values[r, c])
    if table.not_a_number[r, c]:
        return f"{table.text_at(r, c)!r} is not a number"
    if math.isnan(value):
        return (
            f"missing value, and task.data.nan_policy is {nan_policy!r}: fill it in, or set "
            "task.data.nan_policy=drop_rows to skip such rows"
        )
    if c == len(columns.features):
        return f"label {value:g} is not an integer class in [0, {columns.num_classes})"
    if math.isinf(value):
        return f"{value} is not a finite number"
    bound = (
        f"below the minimum {columns.low:g}" if value < columns.low else f"above the maximum {columns.high:g}"
    )
    return f"value {value:g} is {bound} (task.data.min_value/max_value, or the task's declared range)"
