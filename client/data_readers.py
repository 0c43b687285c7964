"""Readers of institutions' data files (CSV, Parquet, NPZ) into one flat table, with the task's layout.

A :class:`FileLayout` says what the task reads from a file: the input (tabular columns by name, or an
NPZ array ``x`` of shape ``[rows, *input_spec.shape]``) and the target (a label column or array, or
one column per regression output). Every reader returns a :class:`RawTable`: float64
``[rows, inputs + targets]`` (inputs flattened in model order, targets last) with where a cell held
text that is not a number, so validation is one code path for every format.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import ConfigError, DataError
from fedge.tasks import NAN_POLICIES, Task, TaskConfig

__all__ = ["SUFFIXES", "FileLayout", "RawTable", "file_layout", "pyarrow_modules", "read_table"]

SUFFIXES = (".csv", ".parquet", ".npz")


@dataclass(frozen=True)
class FileLayout:
    """What a task reads from a data file, and the bounds its values must keep.

    Attributes
    ----------
    task : str
        The task's name (for messages).
    kind : str
        The input kind: ``tabular`` (named columns) or ``tensor`` (NPZ only).
    shape : tuple of int
        One example's shape (``(features,)`` for tabular rows).
    features : tuple of str
        Tabular: the file's feature column names in model input order (empty for tensors).
    targets : tuple of str
        The target column(s): the label column, or one column per regression output.
    classification : bool
        Whether the target is an integer class (else real values).
    num_classes : int
        Classes of a classification target.
    class_names : tuple of str
        Their names (for messages).
    low, high : float
        The range every input value must lie in.
    """

    task: str
    kind: str
    shape: tuple[int, ...]
    features: tuple[str, ...]
    targets: tuple[str, ...]
    classification: bool
    num_classes: int
    class_names: tuple[str, ...]
    low: float
    high: float

    @property
    def width(self) -> int:
        """Input values per example (the product of ``shape``)."""
        return int(np.prod(self.shape))

    @property
    def names(self) -> tuple[str, ...]:
        """Tabular: every column read, features then targets."""
        return (*self.features, *self.targets)

    def position(self, c: int) -> str:
        """Where flat column ``c`` of a :class:`RawTable` lies: a column name, ``x[r, i, j]``, ``y[r]``."""
        if self.kind == "tabular":
            return f"column {self.names[c]!r}"
        if c < self.width:
            return "x[{r}, " + ", ".join(str(int(i)) for i in np.unravel_index(c, self.shape)) + "]"
        t = c - self.width
        return "y[{r}]" if len(self.targets) == 1 else f"y[{{r}}, {t}]"


@dataclass
class RawTable:
    """The read values ``[rows, width + targets]`` (float64, NaN where missing) and where text failed."""

    values: np.ndarray
    not_a_number: np.ndarray  # bool, same shape: a cell held text that is not a number
    text_at: Callable[[int, int], str]
    where: Callable[[int], str]  # " (line 8)" for CSV, "" otherwise


def file_layout(task_config: TaskConfig, task: Task) -> FileLayout:
    """The layout ``task_config.data`` declares for ``task``, checked against the task's specs.

    Raises
    ------
    ConfigError
        If ``task.data`` is inconsistent with the task (column counts, duplicates, policy, range).
    """
    data, spec, target, name = task_config.data, task.input_spec, task.target, task.name
    features: tuple[str, ...] = ()
    if spec.kind == "tabular":
        features = tuple(data.feature_columns) or spec.feature_names
        if len(features) != spec.num_features:
            raise ConfigError(
                f"task.data.feature_columns lists {len(features)} columns but task {name!r} takes "
                f"{spec.num_features} features: list one column per feature, in model input order"
            )
    elif data.feature_columns:
        raise ConfigError(
            f"task.data.feature_columns is for tabular tasks; task {name!r} takes tensors "
            f"{list(spec.shape)} from an NPZ file's array x: remove feature_columns"
        )
    if target.is_classification:
        if data.target_columns:
            raise ConfigError(
                f"task.data.target_columns is for regression targets; task {name!r} is "
                f"{target.kind} and reads its label from task.data.label_column: remove target_columns"
            )
        targets: tuple[str, ...] = (data.label_column,)
    else:
        targets = tuple(data.target_columns) or (data.label_column,)
        if len(targets) != target.num_outputs:
            raise ConfigError(
                f"task.data.target_columns lists {len(targets)} column(s) but task {name!r} predicts "
                f"{target.num_outputs} outputs ({', '.join(target.output_names)}): list one column "
                "per output, in the task's output order"
            )
    names = (*features, *targets)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"task.data names column(s) {duplicates} more than once (features and targets)")
    if data.nan_policy not in NAN_POLICIES:
        raise ConfigError(
            f"task.data.nan_policy must be one of {', '.join(NAN_POLICIES)}, got {data.nan_policy!r}"
        )
    if data.min_rows < 1:
        raise ConfigError(f"task.data.min_rows must be >= 1, got {data.min_rows}")
    low = spec.value_min if data.min_value is None else float(data.min_value)
    high = spec.value_max if data.max_value is None else float(data.max_value)
    if low > high:
        raise ConfigError(f"task.data.min_value {low} is above task.data.max_value {high}")
    return FileLayout(
        name, spec.kind, spec.shape, features, targets, target.is_classification,
        target.num_classes, target.class_names, low, high,
    )  # fmt: skip


def check_suffix(path: Path, layout: FileLayout | None = None) -> str:
    """The file's lower-case suffix; refuses unknown types, and tables for tensor tasks."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"{path}: unsupported data file type {path.suffix or '(no suffix)'!r}: use one of "
            f"{', '.join(SUFFIXES)} (CSV or Parquet with the task's columns, NPZ with arrays x and y)"
        )
    if layout is not None and layout.kind == "tensor" and suffix != ".npz":
        raise ConfigError(
            f"{path}: task {layout.task!r} takes tensors [rows, {', '.join(map(str, layout.shape))}], "
            "which a table cannot hold: store them as NPZ with arrays x and y (np.savez)"
        )
    return suffix


def read_table(path: Path, layout: FileLayout) -> RawTable:
    """Read the values ``layout`` declares from a CSV, Parquet or NPZ file (not yet validated)."""
    suffix = check_suffix(path, layout)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    reader = {".csv": _read_csv, ".parquet": _read_parquet, ".npz": _read_npz}[suffix]
    return reader(path, layout)


def _require_columns(path: Path, header: list[str], layout: FileLayout, hint: str = "") -> list[int]:
    repeated = sorted({h for h in header if header.count(h) > 1 and h in layout.names})
    if repeated:
        raise DataError(f"{path}: column {repeated[0]!r} appears more than once in the header; keep one")
    missing = [n for n in layout.names if n not in header]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        what = "label" if layout.classification else "target(s)"
        raise DataError(
            f"{path}: column {missing[0]!r} is missing{more}; the task reads columns "
            f"{', '.join(layout.features[:3])}, ... ({len(layout.features)} features) and {what} "
            f"{', '.join(map(repr, layout.targets))} (extra columns are ignored){hint}"
        )
    return [header.index(n) for n in layout.names]


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


def _read_csv(path: Path, layout: FileLayout) -> RawTable:
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
    index = _require_columns(path, header, layout, hint)
    for r, record in enumerate(rows):
        if len(record) != len(header):
            raise DataError(
                f"{path}, row {r + 1} (line {lines[r]}): {len(record)} fields, but the header has "
                f"{len(header)}; check for a missing or extra comma"
            )
    parsed = [_parse_text([record[i] for record in rows]) for i in index]
    values = np.stack([p[0] for p in parsed], axis=1) if rows else np.empty((0, len(index)))
    bad = np.stack([p[1] for p in parsed], axis=1) if rows else np.empty((0, len(index)), bool)
    return RawTable(values, bad, lambda r, c: rows[r][index[c]].strip(), lambda r: f" (line {lines[r]})")


def pyarrow_modules() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or a :class:`ConfigError` saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ConfigError(
            "reading Parquet needs pyarrow, which comes with fedge[server]: pip install pyarrow"
        ) from None
    return pa, pq


def _read_parquet(path: Path, layout: FileLayout) -> RawTable:
    pa, pq = pyarrow_modules()
    try:
        header = list(pq.read_schema(path).names)
        _require_columns(path, header, layout)
        table = pq.read_table(path, columns=list(layout.names))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    values, bad, texts = [], [], {}
    for j, name in enumerate(layout.names):
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
    return RawTable(
        np.stack(values, axis=1),
        np.stack(bad, axis=1),
        lambda r, c: str(texts[c][r]).strip() if c in texts else "",
        lambda r: "",
    )


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape)


def _shape_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """How to turn examples of shape ``got`` into ``want`` (both without the batch axis)."""
    if len(want) == len(got) + 1 and want[0] == 1 and got == want[1:]:
        return "add the channel axis (x[:, None])"
    if len(got) == len(want) and got == (*want[1:], want[0]):
        return "the task takes channels first: np.moveaxis(x, -1, 1)"
    if len(want) == 1 and len(got) == 1:
        return f"each row holds the task's {want[0]} features in model input order, not {got[0]}"
    if len(got) == len(want):
        d = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
        return f"dimension {d + 1} is {got[d]}, the task takes {want[d]}; resize the examples"
    if int(np.prod(got)) == int(np.prod(want)):
        return f"x has the right number of values per row: x.reshape(len(x), {_dims(want)})"
    return f"x has {len(got) + 1} dimensions, the task takes {len(want) + 1}; re-export the examples"


def _read_npz(path: Path, layout: FileLayout) -> RawTable:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ("x", "y") if key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable NPZ file of plain arrays ({exc})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(
                f"{path}: array {key!r} is missing; an NPZ data file holds x [rows, "
                f"{_dims(layout.shape)}] and y [rows]"
            )
        if arrays[key].dtype.kind not in "iuf":
            raise DataError(f"{path}: array {key!r} has dtype {arrays[key].dtype}, not integers or floats")
    x, y = arrays["x"], arrays["y"]
    if x.ndim < 1 or tuple(x.shape[1:]) != layout.shape:
        raise DataError(
            f"{path}: x has shape [{_dims(x.shape)}] but task {layout.task!r} takes "
            f"[rows, {_dims(layout.shape)}]: {_shape_hint(tuple(x.shape[1:]), layout.shape)}"
        )
    k = len(layout.targets)
    allowed = [(len(x),)] if k == 1 else []
    allowed += [] if layout.classification else [(len(x), k)]
    if y.shape not in allowed:
        want = " or ".join(f"[{_dims(s)}]" for s in allowed)
        what = "one label per row of x" if layout.classification else f"{k} target value(s) per row of x"
        raise DataError(f"{path}: y has shape [{_dims(y.shape)}], it must be {want}: {what}")
    flat = x.reshape(len(x), -1).astype(np.float64)
    values = np.concatenate([flat, y.astype(np.float64).reshape(len(x), k)], axis=1)
    return RawTable(values, np.zeros(values.shape, bool), lambda r, c: "", lambda r: "")
