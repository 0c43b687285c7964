"""Bad input to the real ``fedge`` command: one line naming the problem, non-zero exit, registry untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry import RegistryConfig, RunCreate, open_registry

FEDGE = [sys.executable, "-m", "fedge.cli.main"]


def run_fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([*FEDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _seed_registry(root: Path) -> str:
    reg = open_registry(RegistryConfig(root=str(root)))
    reg.store.create_run(
        RunCreate(
            run_id="kept",
            task="digits",
            strategy="fedavg",
            num_rounds=1,
            config={},
            config_hash="0" * 64,
        )
    )
    reg.close()
    return hashlib.sha256((root / "registry.db").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("override", "message", "code"),
    [
        (
            "task=mnist",
            "error [unknown_task]: unknown task 'mnist': choose one of breast_cancer, diabetes, digits, "
            "shapes, wine",
            2,
        ),
        (
            "strategy=fedsgd",
            "error [unknown_strategy]: unknown strategy 'fedsgd': choose one of",
            2,
        ),
        (
            "simulation.num_clients=-2",
            "error [config_invalid]: simulation.num_clients must be >= 1, got -2",
            2,
        ),
    ],
)
def test_bad_config_is_one_line_nonzero_exit_and_leaves_the_registry(
    tmp_path: Path, override: str, message: str, code: int
) -> None:
    root = tmp_path / "reg"
    before = _seed_registry(root)

    result = run_fedge("simulate", override, f"registry.root={root}", cwd=tmp_path)

    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message)
    assert hashlib.sha256((root / "registry.db").read_bytes()).hexdigest() == before
    assert not (root / "runs").exists()


def test_unwritable_registry_path_is_one_line_exit_3_and_creates_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the registry folder should go")

    result = run_fedge("simulate", f"registry.root={blocker / 'reg'}", cwd=tmp_path)

    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error [registry_unavailable]: cannot create the registry folder" in lines[0]
    assert str(blocker / "reg") in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


def test_registry_commands_on_a_missing_registry_say_so(tmp_path: Path) -> None:
    result = run_fedge("registry", "list", "--root", str(tmp_path / "none"), cwd=tmp_path)

    assert result.returncode == 3
    assert "no registry at" in result.stderr
    assert not (tmp_path / "none").exists()


def test_show_of_an_unknown_version_is_not_found(tmp_path: Path) -> None:
    _seed_registry(tmp_path / "reg")

    result = run_fedge("registry", "show", "digits@production", "--root", str(tmp_path / "reg"), cwd=tmp_path)

    assert result.returncode == 1
    assert "error [not_found]: model 'digits' has no alias 'production'" in result.stderr
