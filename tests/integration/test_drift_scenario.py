"""``fedge simulate scenario=drift`` end to end (three real Flower runs), in its smallest useful size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry import RegistryConfig, open_registry
from tests.processes import processes_under

pytestmark = pytest.mark.slow

FEDGE = str(Path(sys.executable).parent / "fedge")


def test_the_drift_scenario_detects_the_shift_retrains_and_records_why(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    started = time.monotonic()

    result = subprocess.run(
        [
            FEDGE,
            "simulate",
            "scenario=drift",
            "strategy.num_rounds=1",
            "task.local_epochs=10",
            "drift.windows=3",
            "drift.shift_from_window=1",
            f"registry.root={root}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    elapsed = time.monotonic() - started

    print(f"\nscenario=drift took {elapsed:.0f}s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "the policy fired at window" in result.stdout and "new version digits:2" in result.stdout
    assert (root / "drift-scenario.png").stat().st_size > 10_000
    assert processes_under(tmp_path) == []

    registry = open_registry(RegistryConfig(root=str(root)))
    try:
        v1, v2 = registry.resolve("digits:1"), registry.resolve("digits:2")
        reference = v1.lineage["drift_reference"]
        assert len(reference["edges"]) == 8 and len(reference["edges"][0]) == 6  # 8 pixels x 5 bins
        manifest = json.loads(registry.read_artifact(v1, "manifest"))
        assert manifest["preprocessing"]["drift"]["edges"] == reference["edges"]
        run = registry.store.get_run(v2.run_id)
        assert run.reason.startswith("drift-policy: calibrated test") and run.status == "completed"
        assert v2.lineage["warm_start_from"] == "digits:1"
        actions = {(e.action, e.actor) for e in registry.store.list_audit()}
        assert ("drift.triggered", "drift-policy") in actions
        assert any(action.startswith("approval") and actor == "drift-scenario" for action, actor in actions)
    finally:
        registry.close()

    status = subprocess.run(
        [FEDGE, "drift", "status", "--root", str(root), "--json"], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["versions"][0]["flagged"] is True
    assert body["triggers"][0]["outcome"] == "started"
