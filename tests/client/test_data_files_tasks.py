"""Data files beyond the toys: wine (CSV), diabetes regression (CSV/Parquet/NPZ), shapes images (NPZ)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from client.data_files import ClientData, dataset_fingerprint, load_client_data, write_client_file
from fedge.errors import ConfigError, DataError
from fedge.tasks import Dataset, TaskConfig, get_task

WINE = TaskConfig(name="wine")
DIABETES = TaskConfig(name="diabetes")
SHAPES = TaskConfig(name="shapes", model="cnn")


def _rows(task: TaskConfig, n: int = 40) -> Dataset:
    return get_task(task.name).load_dataset().take(np.arange(n))


def _load(path: Path, task: TaskConfig) -> ClientData:
    return load_client_data(path, task, val_fraction=0.25, seed=7)


def _edit_csv(path: Path, row: int, column: str, value: str) -> None:
    with path.open(newline="") as fh:
        table = list(csv.reader(fh))
    table[row][table[0].index(column)] = value
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(table)


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def test_wine_csv_loads_and_fingerprints_stably(tmp_path: Path) -> None:
    rows = _rows(WINE, 60)
    path = write_client_file(tmp_path / "wine.csv", rows, WINE)

    first, again = _load(path, WINE), _load(path, WINE)

    assert first.fingerprint == again.fingerprint == dataset_fingerprint(rows)
    assert first.train.x.shape[1:] == (13,) and first.train.y.dtype == np.int64
    assert set(np.concatenate([first.train.y, first.val.y]).tolist()) <= {0, 1, 2}


def test_a_wine_label_outside_the_declared_classes_names_them(tmp_path: Path) -> None:
    path = write_client_file(tmp_path / "wine.csv", _rows(WINE), WINE)
    _edit_csv(path, 5, "label", "3")

    with pytest.raises(
        DataError,
        match=rf"^{path}, row 5 \(line 6\), column 'label': label 3 is not an integer class in \[0, 3\) "
        r"\(task 'wine' declares classes class_0, class_1, class_2\)$",
    ):
        _load(path, WINE)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_diabetes_regression_targets_read_back_exactly_in_every_format(tmp_path: Path, suffix: str) -> None:
    rows = _rows(DIABETES, 50)

    data = _load(write_client_file(tmp_path / f"site{suffix}", rows, DIABETES), DIABETES)

    assert data.fingerprint == dataset_fingerprint(rows)
    assert data.train.y.dtype == np.float32 and data.train.y.shape == (len(data.train), 1)
    both = np.sort(np.concatenate([data.train.y, data.val.y]).ravel())
    np.testing.assert_array_equal(both, np.sort(rows.y.ravel()))


def test_regression_fingerprint_covers_targets_and_differs_from_labels(tmp_path: Path) -> None:
    rows = _rows(DIABETES, 30)
    nudged = Dataset(rows.x, rows.y + np.float32(0.5) * (np.arange(30) == 4)[:, None])
    as_labels = Dataset(rows.x, np.zeros(30, dtype=np.int64))
    flat_y = Dataset(rows.x, rows.y.ravel())

    assert dataset_fingerprint(nudged) != dataset_fingerprint(rows)
    assert dataset_fingerprint(as_labels) != dataset_fingerprint(Dataset(rows.x, np.zeros(30, np.float32)))
    assert dataset_fingerprint(flat_y) == dataset_fingerprint(rows), "[n] and [n, 1] targets are one table"


def test_a_missing_regression_target_follows_the_nan_policy(tmp_path: Path) -> None:
    path = write_client_file(tmp_path / "diabetes.csv", _rows(DIABETES, 40), DIABETES)
    _edit_csv(path, 9, "label", "nan")

    with pytest.raises(
        DataError, match=rf"^{path}, row 9 \(line 10\), column 'label': missing \(NaN\) target, and"
    ):
        _load(path, DIABETES)
    dropping = replace(DIABETES, data=replace(DIABETES.data, nan_policy="drop_rows"))
    assert _load(path, dropping).dropped_rows == 1


def test_an_infinite_regression_target_in_parquet_is_refused(tmp_path: Path) -> None:
    rows = _rows(DIABETES, 40)
    path = write_client_file(tmp_path / "diabetes.parquet", rows, DIABETES)
    table = pq.read_table(path)
    y = rows.y.ravel().astype(np.float64)
    y[11] = np.inf
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", pa.array(y)), path)

    with pytest.raises(DataError, match=rf"^{path}, row 12, column 'label': inf is not a finite number$"):
        _load(path, DIABETES)


def test_multi_output_regression_reads_target_columns() -> None:
    with pytest.raises(ConfigError, match=r"lists 2 column\(s\) but task 'diabetes' predicts 1"):
        _load(Path("x.csv"), replace(DIABETES, data=replace(DIABETES.data, target_columns=["a", "b"])))
    with pytest.raises(ConfigError, match="for regression targets; task 'wine' is multiclass"):
        _load(Path("x.csv"), replace(WINE, data=replace(WINE.data, target_columns=["a"])))


def test_diabetes_named_target_column(tmp_path: Path) -> None:
    task = replace(DIABETES, data=replace(DIABETES.data, target_columns=["progression"]))
    rows = _rows(DIABETES, 30)

    data = _load(write_client_file(tmp_path / "d.csv", rows, task), task)

    assert tmp_path.joinpath("d.csv").read_text().splitlines()[0].endswith(",progression")
    assert data.fingerprint == dataset_fingerprint(rows)


def test_shapes_npz_loads_and_fingerprints_stably(tmp_path: Path) -> None:
    rows = _rows(SHAPES, 40)
    path = write_client_file(tmp_path / "shapes.npz", rows, SHAPES)

    first, again = _load(path, SHAPES), _load(path, SHAPES)

    assert first.fingerprint == again.fingerprint == dataset_fingerprint(rows)
    assert first.train.x.shape[1:] == (1, 28, 28) and first.train.x.dtype == np.float32
    flat = Dataset(rows.x.reshape(40, -1), rows.y)
    assert dataset_fingerprint(flat) != first.fingerprint, "the example shape is part of the content"


def test_shapes_without_the_channel_axis_is_refused_naming_the_fix(tmp_path: Path) -> None:
    rows = _rows(SHAPES)
    path = _npz(tmp_path / "no_channel.npz", rows.x[:, 0], rows.y)
    last = _npz(tmp_path / "channels_last.npz", np.moveaxis(rows.x, 1, -1), rows.y)
    small = _npz(tmp_path / "small.npz", rows.x[:, :, :, :24], rows.y)

    with pytest.raises(
        DataError,
        match=rf"^{path}: x has shape \[40, 28, 28\] but task 'shapes' takes \[rows, 1, 28, 28\]: "
        r"add the channel axis",
    ):
        _load(path, SHAPES)
    with pytest.raises(DataError, match=r"takes channels first: np.moveaxis\(x, -1, 1\)"):
        _load(last, SHAPES)
    with pytest.raises(DataError, match="dimension 3 is 24, the task takes 28"):
        _load(small, SHAPES)


def test_a_bad_pixel_is_named_by_row_and_index_with_the_count_of_others(tmp_path: Path) -> None:
    rows = _rows(SHAPES)
    x = rows.x.copy()
    x[12, 0, 3, 4] = 1.5
    x[20, 0, 0, 0] = np.nan
    path = _npz(tmp_path / "bad.npz", x, rows.y)

    with pytest.raises(
        DataError,
        match=rf"^{path}, row 13, x\[12, 0, 3, 4\]: value 1.5 is above the maximum 1 .*\(1 more problem in",
    ):
        _load(path, SHAPES)


def test_a_shapes_label_outside_the_classes_and_a_wrong_y_are_refused(tmp_path: Path) -> None:
    rows = _rows(SHAPES)
    y = rows.y.copy()
    y[7] = 4
    bad_label = _npz(tmp_path / "label.npz", rows.x, y)
    two_d = _npz(tmp_path / "y2d.npz", rows.x, rows.y[:, None])

    with pytest.raises(DataError, match=rf"^{bad_label}, row 8, y\[7\]: label 4 is not an integer class"):
        _load(bad_label, SHAPES)
    with pytest.raises(DataError, match=r"y has shape \[40, 1\], it must be \[40\]: one label per row"):
        _load(two_d, SHAPES)


def test_a_tensor_task_refuses_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'shapes' takes tensors \[rows, 1, 28, 28\].*store them as NPZ"):
        write_client_file(tmp_path / "shapes.csv", _rows(SHAPES), SHAPES)
    with pytest.raises(ConfigError, match="store them as NPZ"):
        _load(tmp_path / "shapes.parquet", SHAPES)
