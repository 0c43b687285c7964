"""Overrides are data: a ``${...}`` interpolation is refused naming the key, and nothing is resolved.

An operator who could write ``task.name=${oc.env:SECRET}`` would otherwise read the coordinator's
environment back in the error that names the (resolved) unknown task.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from coordinator.api import CoordinatorSettings
from fedge.cli.main import app as cli
from fedge.config import load_config
from fedge.errors import ConfigError
from registry import RegistryConfig
from tests.apps import operator_app

SECRET = "s3cr3t-value-of-the-coordinator"

HOSTILE = [
    ("task.name", "task.name=${oc.env:FEDGE_TEST_SECRET}"),
    ("task.name", "task.name='${oc.env:FEDGE_TEST_SECRET}'"),
    ("task.name", "task.name=\\${oc.env:FEDGE_TEST_SECRET}"),
    ("task.name", "task.name=digits${oc.env:FEDGE_TEST_SECRET}"),
    ("+extra", "+extra=${oc.env:FEDGE_TEST_SECRET}"),
    ("strategy.params", "strategy.params={eta: '${oc.env:FEDGE_TEST_SECRET}'}"),
    ("task.name", "task.name=${task.model}"),
]


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDGE_TEST_SECRET", SECRET)


@pytest.mark.parametrize(("key", "override"), HOSTILE, ids=[o for _, o in HOSTILE])
def test_load_config_refuses_an_interpolation_naming_the_key(key: str, override: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(["strategy.num_rounds=2", override])

    message = str(caught.value)
    assert repr(key) in message
    assert "interpolations" in message
    assert SECRET not in message
    assert "oc.env" not in message  # not even the unresolved value is echoed


def test_plain_overrides_still_compose() -> None:
    config = load_config(["strategy=fedadam", "strategy.num_rounds=2", "strategy.params.eta=0.5"])
    assert config.strategy.num_rounds == 2
    assert config.strategy.params["eta"] == 0.5


def test_a_config_file_interpolation_is_refused_naming_its_key(tmp_path: Path) -> None:
    import shutil

    from fedge.config.compose import CONFIG_DIR

    folder = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, folder)
    original = (folder / "config.yaml").read_text()
    assert "\nmode: train\n" in original
    (folder / "leaky.yaml").write_text(
        original.replace("\nmode: train\n", "\nmode: ${oc.env:FEDGE_TEST_SECRET}\n")
    )
    with pytest.raises(ConfigError, match="'mode': interpolations") as caught:
        load_config([], config_dir=folder, config_name="leaky")
    assert SECRET not in str(caught.value)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    app, tokens = operator_app(CoordinatorSettings(registry=RegistryConfig(root=str(tmp_path / "reg"))))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tokens


@pytest.mark.parametrize(("key", "override"), HOSTILE, ids=[o for _, o in HOSTILE])
def test_api_refuses_an_interpolated_run_override_with_a_422(
    api: tuple[TestClient, dict[str, str]], key: str, override: str
) -> None:
    client, tokens = api
    response = client.post(
        "/api/v1/runs",
        json={"overrides": ["strategy.num_rounds=2", override]},
        headers={"Authorization": f"Bearer {tokens['operator']}"},
    )

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "config_invalid"
    assert repr(key) in error["message"]
    assert SECRET not in response.text
    assert "oc.env" not in response.text


def test_fedge_simulate_exits_2_on_an_interpolated_override() -> None:
    result = CliRunner().invoke(cli, ["simulate", "task.name=${oc.env:FEDGE_TEST_SECRET}"])

    assert result.exit_code == 2, result.output
    assert "'task.name'" in result.output
    assert SECRET not in result.output
