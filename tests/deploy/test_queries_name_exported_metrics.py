"""Every PromQL query fedge ships (Grafana panels, alert rules) names a metric fedge really exports.

The exported names are read from the real coordinator's and the real serving app's ``/metrics``
after exercising them (runs, a failed run, checkpoints, predictions good and bad), never listed by
hand: renaming a metric without its dashboard or rule fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from coordinator.api import CoordinatorSettings, create_app
from coordinator.metrics import metrics_registry, render_metrics
from edge import ModelRuntime, ModelSlot, create_serving_app
from fedge.serde import state_dict_to_safetensors
from registry import Registry, RegistryConfig, RunCreate
from tests.apps import role_tokens
from tests.deploy.conftest import DEPLOY
from tests.edge.test_server import release_digits

METRIC = re.compile(r"\bfedge_[a-zA-Z0-9_:]*")
SUFFIXES = ("_bucket", "_sum", "_count")


def exported_names(text: str) -> set[str]:
    """Sample names in a /metrics body, counters also under their ``_total`` name when unsampled."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        names.update(sample.name for sample in family.samples)
    return names


def query_names(expr: str) -> set[str]:
    """The fedge metric names a PromQL expression reads, histogram suffixes stripped."""
    out = set()
    for name in METRIC.findall(expr):
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        out.add(name)
    return out


def _run(registry: Registry, run_id: str) -> None:
    registry.store.create_run(
        RunCreate(
            run_id=run_id, task="digits", strategy="fedavg", num_rounds=2, config={}, config_hash="0" * 64
        )
    )


@pytest.fixture(scope="module")
def coordinator_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    config = RegistryConfig(root=str(tmp_path_factory.mktemp("coordinator") / "reg"))
    app = create_app(CoordinatorSettings(registry=config))
    viewer = role_tokens(config.resolved_database_url())["viewer"]
    registry: Registry = app.state.registry
    _run(registry, "good")
    for round in (1, 2):
        registry.register_checkpoint(
            run_id="good",
            round=round,
            weights=state_dict_to_safetensors({"w": torch.zeros(2)}, {"run_id": "good"}),
            metrics={"central-accuracy": 0.9, "central-loss": 0.3, "participants": 2},
            lineage={"round": round, "nodes": []},
        )
    registry.store.update_run("good", status="completed")
    _run(registry, "bad")
    registry.store.update_run("bad", status="failed")
    with TestClient(app) as client:
        resp = client.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    assert resp.status_code == 200, resp.text
    names = exported_names(resp.text)
    # With a deployment the app passes its nodes' states to the same collector; a SuperLink is
    # more than this test starts, so that part of the scrape is rendered from the collector.
    body, _ = render_metrics(metrics_registry(registry, node_states=lambda: {"site-a": "offline"}))
    return names | exported_names(body.decode())


@pytest.fixture(scope="module")
def edge_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    verified, rows = release_digits(tmp_path_factory.mktemp("edge"))
    slot = ModelSlot(ModelRuntime.from_verified(verified, "fp32", "digits:1"), seed=1)
    with TestClient(create_serving_app(slot, batching=False, max_body_bytes=2**20)) as client:
        assert client.post("/v1/predict", json={"rows": rows[:3].tolist()}).status_code == 200
        assert 400 <= client.post("/v1/predict", json={"rows": [[0.0] * 3]}).status_code < 500  # width
        assert 400 <= client.post("/v1/predict", content=b"{not json").status_code < 500
        text = client.get("/metrics").text
    yield exported_names(text)


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "fedge.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels, "the dashboard has no panels"
    out = []
    for panel in panels:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        assert exprs, f"panel {panel['title']!r} has no query"
        out += [(panel["title"], e) for e in exprs]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            out.append((f"variable {variable['name']}", variable["query"]["query"]))
    return out


def _rule_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "fedge.yml").read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _unknown(queries: list[tuple[str, str]], exported: set[str]) -> list[str]:
    problems = []
    for where, expr in queries:
        names = query_names(expr)
        if not names:
            problems.append(f"{where}: names no fedge metric: {expr}")
        problems += [f"{where}: {name} is not exported" for name in sorted(names - exported)]
    return problems


def test_every_dashboard_query_names_an_exported_metric(
    coordinator_names: set[str], edge_names: set[str]
) -> None:
    assert _unknown(_dashboard_queries(), coordinator_names | edge_names) == []


def test_every_alert_rule_names_an_exported_metric(coordinator_names: set[str], edge_names: set[str]) -> None:
    assert _unknown(_rule_queries(), coordinator_names | edge_names) == []


def test_the_dashboard_covers_what_operators_look_at(
    coordinator_names: set[str], edge_names: set[str]
) -> None:
    used = {name for _, expr in _dashboard_queries() for name in query_names(expr)}
    for needed in (
        "fedge_last_aggregate_accuracy",
        "fedge_rounds_completed_total",
        "fedge_runs",
        "fedge_nodes_online",
        "fedge_node_online",
        "fedge_drift_statistic",
        "fedge_drift_triggers_total",
        "fedge_serving_requests_total",
        "fedge_serving_request_seconds",
        "fedge_serving_errors_total",
        "fedge_edge_activations_total",
        "fedge_serving_model_info",
    ):
        assert needed in used, needed
    dashboard = json.loads((DEPLOY / "grafana" / "fedge.json").read_text())
    assert dashboard["schemaVersion"] >= 39
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if p["type"] != "row")


def test_the_check_catches_a_metric_fedge_does_not_export(coordinator_names: set[str]) -> None:
    assert _unknown([("p", "rate(fedge_serving_requestz_total[5m])")], coordinator_names) == [
        "p: fedge_serving_requestz_total is not exported"
    ]
    assert query_names("histogram_quantile(0.5, rate(fedge_round_duration_seconds_bucket[5m]))") == {
        "fedge_round_duration_seconds"
    }
