"""An institution's data file: read by format, refused naming file/row/column, fingerprinted by content."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from client.data_files import ClientData, dataset_fingerprint, load_client_data, write_client_file
from client.local_data import LocalData
from fedge.errors import ConfigError, DataError
from fedge.tasks import DataFileSchema, Dataset, TaskConfig, get_task

DIGITS = TaskConfig(name="digits")


def _rows(task: TaskConfig = DIGITS, n: int = 40) -> Dataset:
    return get_task(task.name).load_dataset().take(np.arange(n))


def _load(path: Path, task: TaskConfig = DIGITS) -> ClientData:
    return load_client_data(path, task, val_fraction=0.25, seed=7)


def _csv(tmp_path: Path, task: TaskConfig = DIGITS, n: int = 40, name: str = "site.csv") -> Path:
    return write_client_file(tmp_path / name, _rows(task, n), task)


def _edit_csv(path: Path, row: int, column: str, value: str) -> None:
    """Set data row ``row`` (1-based, header excluded) of ``column`` to ``value``."""
    with path.open(newline="") as fh:
        table = list(csv.reader(fh))
    table[row][table[0].index(column)] = value
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(table)


def _with_data(task: TaskConfig, **changes: object) -> TaskConfig:
    return replace(task, data=replace(task.data, **changes))


@pytest.mark.parametrize("task", [DIGITS, TaskConfig(name="breast_cancer")], ids=lambda t: t.name)
def test_the_same_table_reads_and_fingerprints_the_same_in_every_format(
    tmp_path: Path, task: TaskConfig
) -> None:
    rows = _rows(task, 50)

    loaded = [
        _load(write_client_file(tmp_path / f"site{s}", rows, task), task)
        for s in (".csv", ".parquet", ".npz")
    ]

    assert {d.fingerprint for d in loaded} == {dataset_fingerprint(rows)}
    for data in loaded:
        assert isinstance(data, LocalData), "a ClientData is what the trainer takes"
        assert data.num_rows == 50 and len(data.train) + len(data.val) == 50 and len(data.val) == 12
        np.testing.assert_array_equal(data.train.x, loaded[0].train.x)
        np.testing.assert_array_equal(data.val.y, loaded[0].val.y)
        assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int64
    both = np.concatenate([loaded[0].train.x, loaded[0].val.x])
    np.testing.assert_array_equal(np.sort(both, axis=0), np.sort(rows.x, axis=0))


def test_one_changed_value_or_row_order_changes_the_fingerprint(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    before = _load(path).fingerprint
    assert _load(path).fingerprint == before  # same file, same fingerprint

    _edit_csv(path, 3, "pixel_2_2", "0.123")
    changed = _load(path).fingerprint
    rows = _rows()
    reordered = write_client_file(tmp_path / "reordered.npz", rows.take(np.arange(len(rows))[::-1]), DIGITS)

    assert changed != before
    assert _load(reordered).fingerprint not in (before, changed)


def test_extra_columns_and_column_order_in_the_file_do_not_matter(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    with path.open(newline="") as fh:
        table = list(csv.reader(fh))
    shuffled = tmp_path / "shuffled.csv"
    order = list(reversed(range(len(table[0]))))
    with shuffled.open("w", newline="") as fh:
        writer = csv.writer(fh)
        for i, record in enumerate(table):
            writer.writerow(["patient_id" if i == 0 else f"p{i}", *(record[j] for j in order)])

    assert _load(shuffled).fingerprint == _load(path).fingerprint


def test_feature_columns_map_the_files_own_names(tmp_path: Path) -> None:
    task = _with_data(DIGITS, feature_columns=[f"f{i}" for i in range(64)], label_column="digit")
    path = write_client_file(tmp_path / "own.parquet", _rows(), task)

    data = _load(path, task)

    assert pq.read_schema(path).names[:2] == ["f0", "f1"] and "digit" in pq.read_schema(path).names
    assert data.num_rows == 40


@pytest.mark.parametrize(
    ("row", "column", "value", "problem"),
    [
        (7, "pixel_0_3", "abc", "'abc' is not a number"),
        (2, "pixel_1_1", "1.5", "value 1.5 is above the maximum 1"),
        (5, "pixel_7_7", "-0.25", "value -0.25 is below the minimum 0"),
        (4, "pixel_3_3", "", "missing value, and task.data.nan_policy is 'reject'"),
        (9, "pixel_3_3", "NaN", "missing value"),
        (6, "pixel_0_0", "inf", "inf is not a finite number"),
        (3, "label", "3.5", "label 3.5 is not an integer class in [0, 10)"),
        (8, "label", "10", "label 10 is not an integer class in [0, 10)"),
        (1, "label", "-1", "label -1 is not an integer class in [0, 10)"),
        (40, "label", "cat", "'cat' is not a number"),
    ],
)
def test_a_bad_cell_is_named_by_file_row_and_column(
    tmp_path: Path, row: int, column: str, value: str, problem: str
) -> None:
    path = _csv(tmp_path)
    _edit_csv(path, row, column, value)

    with pytest.raises(DataError) as info:
        _load(path)

    assert str(info.value).startswith(f"{path}, row {row} (line {row + 1}), column {column!r}: {problem}")
    assert "more problem" not in str(info.value)
    assert info.value.code == "data_invalid"


def test_the_first_problem_is_reported_with_the_count_of_the_others(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    _edit_csv(path, 12, "pixel_0_1", "x")
    _edit_csv(path, 5, "pixel_4_4", "9")
    _edit_csv(path, 5, "pixel_0_2", "7")

    with pytest.raises(
        DataError, match=r"row 5 \(line 6\), column 'pixel_0_2': value 7 is above .* \(2 more problems"
    ):
        _load(path)


def test_a_missing_column_a_ragged_row_and_a_semicolon_file_are_named(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    text = path.read_text().splitlines()
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("\n".join(",".join(line.split(",")[:-1]) for line in text) + "\n")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("\n".join([*text[:3], text[3] + ",0", *text[4:]]) + "\n")
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("\n".join(line.replace(",", ";") for line in text) + "\n")

    with pytest.raises(
        DataError, match=rf"^{no_label}: column 'label' is missing; the task reads columns pixel_0_0"
    ):
        _load(no_label)
    with pytest.raises(DataError, match=rf"^{ragged}, row 3 \(line 4\): 66 fields, but the header has 65"):
        _load(ragged)
    with pytest.raises(
        DataError, match=r"column 'pixel_0_0' is missing \(and 64 more\).*must be comma separated"
    ):
        _load(semicolons)


def test_blank_lines_are_skipped_but_line_numbers_stay_true(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "", *lines[1:]]) + "\n\n")
    _edit_csv(path, 3, "label", "11")  # csv row index 3 is data row 2 because of the blank line

    with pytest.raises(DataError, match=r"row 2 \(line 4\), column 'label': label 11"):
        _load(path)


def test_drop_rows_skips_rows_with_missing_values_and_min_rows_still_holds(tmp_path: Path) -> None:
    path = _csv(tmp_path, n=25)
    for row in (2, 4, 6):
        _edit_csv(path, row, "pixel_5_5", "")
    _edit_csv(path, 8, "label", "")
    dropping = _with_data(DIGITS, nan_policy="drop_rows")

    data = _load(path, dropping)

    assert (data.num_rows, data.dropped_rows) == (21, 4)
    with pytest.raises(
        DataError, match=rf"^{path}: 21 usable rows after dropping 4 with missing values, fewer than"
    ):
        _load(path, _with_data(dropping, min_rows=22))
    _edit_csv(path, 9, "pixel_5_5", "oops")
    with pytest.raises(DataError, match=r"row 9 .* 'oops' is not a number"):
        _load(path, dropping)  # text is never "missing"


def test_too_few_rows_is_refused_before_training(tmp_path: Path) -> None:
    path = _csv(tmp_path, n=19)

    with pytest.raises(DataError, match=r"19 usable rows, fewer than task.data.min_rows=20"):
        _load(path)
    assert _load(path, _with_data(DIGITS, min_rows=19)).num_rows == 19


def test_the_range_can_be_declared_in_the_config(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    _edit_csv(path, 2, "pixel_1_1", "1.5")

    assert _load(path, _with_data(DIGITS, max_value=2.0)).num_rows == 40
    with pytest.raises(DataError, match=r"above the maximum 0\.9"):
        _load(_csv(tmp_path, name="b.csv"), _with_data(DIGITS, max_value=0.9))


def test_parquet_text_and_null_cells_are_named_like_csv(tmp_path: Path) -> None:
    rows = _rows()
    path = write_client_file(tmp_path / "site.parquet", rows, DIGITS)
    table = pq.read_table(path)
    texts = [str(v) for v in table.column("pixel_2_2").to_pylist()]
    texts[5] = "n/a"
    pq.write_table(
        table.set_column(table.schema.get_field_index("pixel_2_2"), "pixel_2_2", pa.array(texts)), path
    )
    nulls = tmp_path / "nulls.parquet"
    column = table.column("pixel_0_0").to_pylist()
    column[10] = None
    pq.write_table(table.set_column(0, "pixel_0_0", pa.array(column)), nulls)

    with pytest.raises(DataError, match=rf"^{path}, row 6, column 'pixel_2_2': 'n/a' is not a number"):
        _load(path)
    with pytest.raises(DataError, match=rf"^{nulls}, row 11, column 'pixel_0_0': missing value"):
        _load(nulls)


def test_malformed_npz_and_unknown_types_are_refused(tmp_path: Path) -> None:
    rows = _rows()
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, x=rows.x[:, :10], y=rows.y)
    no_y = tmp_path / "no_y.npz"
    np.savez(no_y, x=rows.x)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")

    with pytest.raises(DataError, match=r"x has shape \[40, 10\] but task 'digits' takes \[rows, 64\]"):
        _load(narrow)
    with pytest.raises(DataError, match="array 'y' is missing"):
        _load(no_y)
    with pytest.raises(DataError, match=rf"^{bad}: not a readable NPZ file"):
        _load(bad)
    with pytest.raises(
        ConfigError, match=r"unsupported data file type '\.xlsx': use one of \.csv, \.parquet, \.npz"
    ):
        _load(tmp_path / "site.xlsx")
    with pytest.raises(DataError, match="does not exist"):
        _load(tmp_path / "absent.csv")


def test_inconsistent_data_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lists 2 columns but task 'digits' takes 64"):
        _load(Path("x.csv"), _with_data(DIGITS, feature_columns=["a", "b"]))
    with pytest.raises(ConfigError, match="nan_policy must be one of reject, drop_rows"):
        _load(Path("x.csv"), _with_data(DIGITS, nan_policy="ignore"))


def test_a_task_config_from_json_holds_a_data_schema() -> None:
    cfg = TaskConfig(name="digits", data={"nan_policy": "drop_rows", "min_rows": 5})  # type: ignore[arg-type]

    assert cfg.data == DataFileSchema(nan_policy="drop_rows", min_rows=5)
