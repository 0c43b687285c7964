"""`fedge coordinator serve` takes the telemetry limits from its options; bad ones exit 2, named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from coordinator.telemetry_limits import TelemetryLimits
from fedge.cli.main import app as cli
from registry import RegistryConfig
from tests.apps import device_token

REPORT = {"model": {"name": "digits", "version": "1"}, "served": 3}


def test_serve_applies_the_telemetry_options_to_device_posts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **_kw: served.setdefault("app", app))
    root = tmp_path / "reg"

    result = CliRunner().invoke(
        cli,
        ["coordinator", "serve", "--telemetry-rate", "0.5", "--telemetry-burst", "1",
         "--max-sites-per-window", "7", f"registry.root={root}"],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    app = served["app"]
    assert app.state.telemetry.limits == TelemetryLimits(rate_per_minute=0.5, burst=1, max_sites_per_window=7)
    token = device_token(RegistryConfig(root=str(root)).resolved_database_url(), "cam-17")
    headers = {"authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        first = client.post("/api/v1/edge/reports", json=REPORT, headers=headers)
        second = client.post("/api/v1/edge/reports", json=REPORT, headers=headers)
    assert first.status_code == 201, first.text
    assert second.status_code == 429, second.text
    assert "0.5 per minute (burst 1)" in second.json()["error"]["message"]
    assert int(second.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("--telemetry-rate", "0", "must be a positive number of posts per minute, got 0.0"),
     ("--telemetry-rate", "nan", "must be a positive number of posts per minute, got nan"),
     ("--telemetry-burst", "0", "not in the range x>=1"),
     ("--max-sites-per-window", "-3", "not in the range x>=1")],
)  # fmt: skip
def test_serve_refuses_a_limit_that_is_not_positive_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, value: str, says: str
) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda app, **_kw: pytest.fail("a refused limit must not serve"))

    result = CliRunner().invoke(
        cli, ["coordinator", "serve", option, value, f"registry.root={tmp_path / 'reg'}"]
    )

    assert result.exit_code == 2, result.output
    assert option in result.output and says in " ".join(result.output.split())
    assert not (tmp_path / "reg").exists(), "nothing is created before the options are checked"
