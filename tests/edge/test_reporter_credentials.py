"""The device reporter against the real operator API: only its device token gets telemetry in.

A report refused for its credential (a viewer's token, an unknown one) cannot succeed by retrying:
the reporter says so once, as a warning naming the fix, and keeps the model serving.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings
from edge.reporter import DeviceReporter
from fedge.api_client import ApiClient
from registry import RegistryConfig
from tests.apps import device_token, operator_app


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str], database_url: str) -> None:
        self.client, self.tokens, self.database_url = client, tokens, database_url

    def reporter(self, token: str, state: Path) -> DeviceReporter:
        api = ApiClient("http://testserver", token=token, client=self.client)
        return DeviceReporter(api, device_name="cam-17", state_root=state, drift=None)

    def devices(self) -> list[str]:
        viewer = {"Authorization": f"Bearer {self.tokens['viewer']}"}
        return [d["device"] for d in self.client.get("/api/v1/edge/devices", headers=viewer).json()]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = CoordinatorSettings(registry=RegistryConfig(root=str(tmp_path / "reg")))
    app, tokens = operator_app(settings)
    with TestClient(app) as client:
        yield Api(client, tokens, settings.registry.resolved_database_url())


def body(reporter: DeviceReporter) -> dict[str, object]:
    return reporter.report(model={"name": "digits", "version": "1"}, health={"status": "ok"})


def credential_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "edge.reporter" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_a_report_with_a_non_device_token_is_refused_and_warned_once_naming_the_fix(
    api: Api, role: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = api.reporter(api.tokens[role], tmp_path / "state")
    caplog.set_level(logging.INFO, logger="edge.reporter")

    assert reporter.send(body(reporter)) is False
    assert reporter.send(body(reporter)) is False

    (warning,) = credential_warnings(caplog)
    assert f"role {role!r}" in warning and "--role device --device NAME" in warning
    assert api.devices() == [], "nothing was filed"


def test_a_report_with_an_unknown_token_is_warned_once(
    api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = api.reporter("not-a-token", tmp_path / "state")
    caplog.set_level(logging.INFO, logger="edge.reporter")

    assert reporter.send(body(reporter)) is False
    assert reporter.send(body(reporter)) is False

    assert len(credential_warnings(caplog)) == 1
    assert "not-a-token" not in caplog.text, "the secret is never logged"


def test_a_report_with_its_device_token_is_filed_under_the_tokens_device_without_a_warning(
    api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = api.reporter(device_token(api.database_url, "cam-17"), tmp_path / "state")
    caplog.set_level(logging.INFO, logger="edge.reporter")

    assert reporter.send(body(reporter)) is True

    assert api.devices() == ["cam-17"]
    assert credential_warnings(caplog) == []
