"""Schemathesis over the coordinator's and the edge's OpenAPI: no input a client can send is a 5xx.

Bounded (a few examples per operation, no deadline per example) so the file runs in about a minute.
The coordinator runs on a real SQLite registry with real tokens; requests carry an admin token, so
every route is reached past authentication.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from coordinator.api import CoordinatorSettings
from registry import RegistryConfig
from tests.apps import device_token, operator_app

pytestmark = pytest.mark.slow

EXAMPLES = 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, str]]:
    root = tmp_path_factory.mktemp("fuzz") / "reg"
    config = RegistryConfig(root=str(root))
    app, tokens = operator_app(CoordinatorSettings(registry=config))
    tokens["url"] = config.resolved_database_url()
    return app, tokens


def fuzz(schema: Any, headers: dict[str, str], *, methods: tuple[str, ...] = ()) -> list[str]:
    """Run every operation's generated cases (valid and invalid ones); the server errors found.

    ``methods``: only the operations whose label (``POST /api/v1/...``) starts with one of these.
    """
    from schemathesis.generation import GenerationMode

    errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if methods and not operation.label.startswith(methods):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(operation, mode, headers, errors)
            except Unsatisfiable:
                pass  # no invalid case exists for this operation (nothing to send but valid input)
            except Exception as exc:  # collected, reported all at once below
                if not errors or operation.label not in errors[-1]:
                    errors.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:300]}")
    return errors


def _fuzz_operation(operation: Any, mode: Any, headers: dict[str, str], errors: list[str]) -> None:
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        if response.status_code >= 500:
            errors.append(
                f"{operation.label} -> {response.status_code}: {case.path_parameters} "
                f"{case.query} {str(case.body)[:200]} {response.text[:200]}"
            )
        case.validate_response(response, checks=[not_a_server_error])

    run()


def test_coordinator_answers_no_server_error(coordinator: tuple[Any, dict[str, str]]) -> None:
    app, tokens = coordinator
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    errors = fuzz(schema, {"Authorization": f"Bearer {tokens['admin']}"})
    assert not errors, "\n".join(errors)


def test_telemetry_routes_answer_no_server_error_to_a_device(coordinator: tuple[Any, dict[str, str]]) -> None:
    """The routes only a ``device`` token reaches: drift summaries and device reports."""
    app, tokens = coordinator
    token = device_token(tokens["url"], "cam-17")
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    telemetry = ("POST /api/v1/drift/summaries", "POST /api/v1/edge/reports")
    errors = fuzz(schema, {"Authorization": f"Bearer {token}"}, methods=telemetry)
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def edge_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from edge import ModelRuntime, ModelSlot, create_serving_app
    from tests.edge.test_server import release_digits

    verified, _ = release_digits(tmp_path_factory.mktemp("bundle"))
    runtime = ModelRuntime.from_verified(verified, "fp32", "v1")
    return create_serving_app(ModelSlot(runtime, seed=1), batching=False, max_body_bytes=2**20)


def test_edge_publishes_its_openapi_with_the_predict_body(edge_app: Any) -> None:
    from fastapi.testclient import TestClient

    with TestClient(edge_app) as client:
        doc = client.get("/openapi.json").json()
    body = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["required"] == ["rows"]
    assert "application/x-npy" in body


def test_edge_answers_no_server_error(edge_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", edge_app)
    errors = fuzz(schema, {})
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"rows": "\\ud800"}', 400),  # orjson: a lone surrogate is not JSON
        (b'{"rows": [[' + b"18446744073709551616," * 63 + b"1]]}", 422),  # 2^64 in a row
        (b'{"rows": [[' + b"-9223372036854775809," * 63 + b"1]]}", 422),
        (b"[" * 100_000, 400),
    ],
    ids=["surrogate", "2^64", "-2^63-1", "deep"],
)
def test_edge_predict_refuses_hostile_json_with_a_4xx(edge_app: Any, body: bytes, status: int) -> None:
    from fastapi.testclient import TestClient

    with TestClient(edge_app, raise_server_exceptions=False) as client:
        response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
