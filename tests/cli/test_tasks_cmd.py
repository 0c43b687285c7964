"""``fedge tasks list``, ``fedge new`` and broken tasks: the real command, one line and exit 2 for each fault.

The broken tasks live in ``tests/fixtures/broken_tasks`` (outside fedge's packages), imported by path
or installed with ``pip --target`` so their ``fedge.tasks`` entry points are discovered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FEDGE = [sys.executable, "-m", "fedge.cli.main"]
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
BROKEN = FIXTURES / "broken_tasks"


def run_fedge(
    *args: str, cwd: Path, path: tuple[Path, ...] = (), timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``fedge ARGS`` with ``path`` in front of PYTHONPATH (the checkout stays importable)."""
    pythonpath = os.pathsep.join([*(str(p) for p in path), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": pythonpath}
    return subprocess.run([*FEDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def pip_install_target(package: Path, target: Path) -> Path:
    """Install ``package`` into the folder ``target`` offline (no deps, no build isolation)."""
    import shutil

    source = target.parent / f"{package.name}-src"
    shutil.copytree(package, source)  # build leftovers stay out of the checkout
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
            "--no-index", "--target", str(target), str(source),
        ],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return target


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error [")]


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The broken-tasks distribution installed into a folder of its own."""
    return pip_install_target(BROKEN, tmp_path_factory.mktemp("broken") / "site")


def test_tasks_list_shows_builtins_with_input_spec_and_target_kind(tmp_path: Path) -> None:
    result = run_fedge("tasks", "list", "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"digits", "breast_cancer", "wine", "diabetes", "shapes"} <= set(rows)
    assert (rows["digits"]["input"], rows["digits"]["target"]) == ("tabular[64]", "multiclass(10)")
    assert (rows["breast_cancer"]["input"], rows["breast_cancer"]["target"]) == ("tabular[30]", "binary")
    assert (rows["diabetes"]["input"], rows["diabetes"]["target"]) == ("tabular[10]", "regression(1)")
    assert (rows["shapes"]["input"], rows["shapes"]["target"]) == ("tensor[1x28x28]", "multiclass(4)")
    assert all(row["source"] == "builtin" and not row["error"] for row in rows.values())


def test_tasks_list_shows_installed_entry_points_and_names_a_broken_one(
    broken_site: Path, tmp_path: Path
) -> None:
    table = run_fedge("tasks", "list", cwd=tmp_path, path=(broken_site,))
    listed = run_fedge("tasks", "list", "--json", cwd=tmp_path, path=(broken_site,))

    assert table.returncode == 0, table.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["broken_missing"]["source"] == "entry-point"
    assert "load_dataset" in rows["broken_missing"]["error"]
    assert "fedge_no_such_dependency" in rows["broken_import"]["error"]
    assert rows["digits"]["error"] == ""  # a broken package does not hide the others
    assert "broken_missing" in table.stdout and "broken" in table.stdout
    assert any(line.startswith("broken_import: ") for line in table.stderr.splitlines())


@pytest.mark.parametrize(
    ("task", "path_kind", "named"),
    [
        ("no_such_task", "none", ["unknown task 'no_such_task'", "digits", "my_package.module:MyTask"]),
        ("fedge_broken_tasks.unimportable:AnyTask", "path", ["cannot import", "fedge_no_such_dependency"]),
        ("fedge_broken_tasks.tasks:NoSuchClass", "path", ["has no attribute 'NoSuchClass'"]),
        ("fedge_broken_tasks.tasks:MissingMethodTask", "path", ["MissingMethodTask", "load_dataset"]),
        ("broken_missing", "site", ["broken_missing", "load_dataset"]),
        ("broken_import", "site", ["broken_import", "fedge_no_such_dependency"]),
    ],
)
def test_an_unknown_or_broken_task_is_one_line_and_exit_2(
    task: str, path_kind: str, named: list[str], broken_site: Path, tmp_path: Path
) -> None:
    path = {"none": (), "path": (BROKEN,), "site": (broken_site,)}[path_kind]

    result = run_fedge(
        "simulate", f"task={task}", f"registry.root={tmp_path / 'reg'}", cwd=tmp_path, path=path
    )

    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = error_lines(result)
    assert all(part in line for part in named), line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reg" / "registry.db").exists()


@pytest.mark.parametrize(
    ("cls", "named"),
    [
        # The model's output width disagrees with the target kind (binary: 2 logits).
        ("WrongOutputTask", ["broken_output", "output", "3", "2"]),
        # The data's examples disagree with input_spec.shape.
        ("ShapeMismatchTask", ["broken_shape", "shape", "[5]", "[4]"]),
        # A label outside the declared classes, named by row.
        ("LabelOutsideTask", ["broken_label", "row 17", "label 2"]),
        # A regression target with NaN, named by row.
        ("NanTargetTask", ["broken_nan", "row 5", "NaN"]),
        # A model ONNX cannot export.
        ("UnexportableTask", ["broken_export", "ONNX"]),
    ],
)
def test_a_task_that_breaks_its_declaration_is_refused_before_any_round(
    cls: str, named: list[str], tmp_path: Path
) -> None:
    result = run_fedge(
        "simulate",
        f"task=fedge_broken_tasks.tasks:{cls}",
        "strategy.num_rounds=1",
        "simulation.num_clients=2",
        f"registry.root={tmp_path / 'reg'}",
        cwd=tmp_path,
        path=(BROKEN,),
        timeout=300,
    )

    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = error_lines(result)
    assert all(part in line for part in named), line
    assert "round 1" not in result.stdout
    reg = tmp_path / "reg" / "registry.db"
    if reg.exists():  # nothing registered
        from registry import RegistryConfig, open_registry

        registry = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
        try:
            assert registry.store.list_versions() == []
            assert registry.store.list_runs() == []
        finally:
            registry.close()


def test_new_writes_a_package_with_entry_point_task_data_and_test(tmp_path: Path) -> None:
    result = run_fedge("new", "demo_task", "--dir", str(tmp_path), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    root = tmp_path / "demo_task"
    assert f"created {root}" in result.stdout
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points."fedge.tasks"]' in pyproject
    assert 'demo_task = "demo_task.task:DemoTask"' in pyproject
    for rel in ("demo_task/__init__.py", "demo_task/task.py", "demo_task/data.py", "tests/test_task.py"):
        assert (root / rel).is_file(), rel
    loaded = run_fedge("tasks", "list", "--json", cwd=tmp_path, path=(root,))
    assert loaded.returncode == 0  # importable by path; an entry point only once installed
    from_path = subprocess.run(
        [sys.executable, "-c", "from fedge.tasks import get_task; t = get_task('demo_task.task:DemoTask');"
         "print(t.name, t.input_spec.describe(), t.target.describe())"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT)])},
    )  # fmt: skip
    assert from_path.stdout.split() == ["demo_task", "tabular[8]", "binary"], from_path.stderr


@pytest.mark.parametrize("name", ["Demo", "1task", "class", "with-dash"])
def test_new_refuses_a_name_that_is_not_a_lowercase_identifier(name: str, tmp_path: Path) -> None:
    result = run_fedge("new", name, "--dir", str(tmp_path), cwd=tmp_path)

    assert result.returncode == 2
    (line,) = error_lines(result)
    assert repr(name) in line and "lower-case Python identifier" in line
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "demo_task").mkdir()
    (tmp_path / "demo_task" / "keep.txt").write_text("mine")

    result = run_fedge("new", "demo_task", "--dir", str(tmp_path), cwd=tmp_path)

    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "already exists" in line
    assert [p.name for p in (tmp_path / "demo_task").iterdir()] == ["keep.txt"]
