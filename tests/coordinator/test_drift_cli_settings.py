"""`fedge coordinator serve` and `fedge drift status` read the drift policy from the composed config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fedge.cli.main import app as cli
from registry import RegistryConfig, open_registry
from tests.apps import role_tokens


def test_serve_passes_the_drift_overrides_to_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: capture the app instead of serving it
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **_kw: served.setdefault("app", app))
    root = tmp_path / "reg"

    # Execute
    result = CliRunner().invoke(
        cli,
        ["coordinator", "serve", f"registry.root={root}", "drift.policy.statistic=js",
         "drift.policy.threshold=0.35"],
    )  # fmt: skip

    # Assert: the policy that judges pushed windows is the overridden one
    assert result.exit_code == 0, result.output
    token = role_tokens(RegistryConfig(root=str(root)).resolved_database_url())["viewer"]
    with TestClient(served["app"]) as client:
        response = client.get("/api/v1/drift/status", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json()["policy"]["statistic"] == "js"
    assert response.json()["policy"]["threshold"] == 0.35


def test_drift_status_takes_hydra_overrides(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    open_registry(RegistryConfig(root=str(root))).close()

    result = CliRunner().invoke(
        cli, ["drift", "status", "--root", str(root), "--json", "drift.policy.threshold=0.45"]
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["policy"]["threshold"] == 0.45


def test_drift_status_refuses_a_bad_override_naming_the_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["drift", "status", "--root", str(tmp_path / "reg"), "drift.policy.statistic=chi2"]
    )

    assert result.exit_code != 0
    assert "drift.policy.statistic" in result.output
