"""A real ``fedge simulate scenario=byzantine`` in which one client is poisoned by the attack harness:
its update is dropped every round, the lineage says so, and the run still registers a version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry import RegistryConfig, open_registry

pytestmark = pytest.mark.slow

FEDGE = str(Path(sys.executable).parent / "fedge")


def test_a_poisoned_client_is_dropped_and_recorded_and_the_run_completes(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            FEDGE, "simulate", "scenario=byzantine", "simulation.num_clients=3", "strategy.num_rounds=2",
            "task.local_epochs=1", "scenario.attackers=[0]", "scenario.attack=random", "scenario.attacks=[]",
            f"registry.root={tmp_path / 'reg'}",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=500,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "updates validation dropped" in result.stdout
    reg = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    try:
        (run,) = reg.store.list_runs()
        checkpoints = reg.store.list_checkpoints(run.run_id)
        versions = reg.store.list_versions()
    finally:
        reg.close()
    assert run.status == "completed" and len(versions) == 1
    assert [c.round for c in checkpoints] == [1, 2]
    for ckpt in checkpoints:
        (rejected,) = ckpt.lineage["rejected_updates"]
        assert rejected["node_name"] == "simulated-0" and rejected["check"] == "update-norm"
        assert rejected["value"] > rejected["bound"]
        # the two honest clients were aggregated; the poisoned one is not among the round's nodes
        assert sorted(n["name"] for n in ckpt.lineage["nodes"]) == ["simulated-1", "simulated-2"]
    # the run log names the dropped node, the check and the value
    text = (tmp_path / "reg" / "runs" / run.run_id / "flower-run.log").read_text()
    assert text.count("(simulated-0): check update-norm failed (value ") == 2
