"""A run's HTML report, built from a real completed simulation: charts, config, clients, gates, escaping."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.api import CoordinatorSettings, create_app
from coordinator.report import collect_run_report, render_run_report
from fedge.config import GatesConfig, load_config
from registry import ModelVersionCreate, Registry, RegistryConfig, RunCreate, open_registry
from tests.apps import role_tokens
from tests.cli.test_cli_errors import FEDGE

ROUNDS = 3


@dataclass
class Page(HTMLParser):
    """Every start tag (name, attrs) and the page's text, as a browser's parser sees them."""

    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        HTMLParser.__init__(self, convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.chunks)

    def points(self, series: str) -> list[str]:
        return [a["data-round"] for t, a in self.tags if t == "circle" and a.get("data-series") == series]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def assert_self_contained(page: Page) -> None:
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "img", "object", "embed"), (tag, attrs)
        for key in ("src", "href", "action", "srcset"):
            assert not attrs.get(key, "").lower().startswith(("http://", "https://", "//")), (tag, attrs)


@dataclass(frozen=True)
class Simulated:
    root: Path
    run_id: str


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Simulated:
    """A real `fedge simulate` of ROUNDS rounds on 2 clients, completed, in its own registry."""
    work = tmp_path_factory.mktemp("sim")
    root = work / ".fedge"
    done = subprocess.run(
        [*FEDGE, "simulate", f"strategy.num_rounds={ROUNDS}", "simulation.num_clients=2",
         f"registry.root={root}"],
        cwd=work, capture_output=True, text=True, timeout=900,
        env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    registry = open_registry(RegistryConfig(root=str(root)))
    try:
        [run] = registry.store.list_runs()
    finally:
        registry.close()
    assert run.status == "completed"
    return Simulated(root, run.run_id)


def check_simulation_report(html: str, run_id: str) -> None:
    page = parse(html)
    assert_self_contained(page)
    assert page.points("central-accuracy") == [str(r) for r in range(1, ROUNDS + 1)]
    assert page.points("central-loss") == [str(r) for r in range(1, ROUNDS + 1)]
    text = page.text
    assert run_id in text and "completed" in text and f"{ROUNDS}/{ROUNDS}" in text
    cells = [c.strip() for c in page.chunks if c.strip()]
    assert cells[cells.index("strategy.num_rounds") + 1] == str(ROUNDS)
    assert cells[cells.index("task.name") + 1] == "digits"
    assert cells[cells.index("simulation.num_clients") + 1] == "2"
    gates = {
        c for c in cells if c.startswith(("min_metrics[", "min_client_metrics[", "onnx_parity", "approvals"))
    }
    assert {
        "min_metrics[central-accuracy]",
        "min_client_metrics[eval-accuracy]",
        "onnx_parity",
        "approvals",
    } <= gates
    assert "lacking" in cells  # production needs an approval nobody gave
    assert "simulated-0" in cells and "simulated-1" in cells  # per-client rows
    assert sum(1 for c in cells if c.startswith("sha256:")) >= 4  # bundle files with digests
    assert "Signed (ed25519" in text


@pytest.mark.slow
def test_the_report_of_a_real_simulation(simulated: Simulated) -> None:
    registry = open_registry(RegistryConfig(root=str(simulated.root)))
    try:
        gates = load_config([f"registry.root={simulated.root}"]).registry.gates
        html = render_run_report(collect_run_report(registry, simulated.run_id, gates))
    finally:
        registry.close()
    check_simulation_report(html, simulated.run_id)


@pytest.mark.slow
def test_fedge_report_writes_the_same_page_from_the_cli(simulated: Simulated, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = subprocess.run(
        [*FEDGE, "report", simulated.run_id, "--root", str(simulated.root), "--out", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_simulation_report(out.read_text(encoding="utf-8"), simulated.run_id)
    missing = subprocess.run(
        [*FEDGE, "report", "no-such-run", "--root", str(simulated.root), "--out", str(tmp_path / "x.html")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert missing.returncode != 0 and "no-such-run" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "x.html").exists()


@pytest.fixture
def api(simulated: Simulated) -> Iterator[tuple[TestClient, dict[str, str]]]:
    config = load_config([f"registry.root={simulated.root}"]).registry  # as `fedge coordinator serve` does
    app = create_app(CoordinatorSettings(registry=config))
    tokens = role_tokens(config.resolved_database_url())
    with TestClient(app) as client:
        yield client, tokens


@pytest.mark.slow
def test_the_api_serves_the_report_to_a_viewer(api: Any, simulated: Simulated) -> None:
    client, tokens = api
    answer = client.get(
        f"/api/v1/runs/{simulated.run_id}/report", headers={"Authorization": f"Bearer {tokens['viewer']}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    check_simulation_report(answer.text, simulated.run_id)
    missing = client.get("/api/v1/runs/nope/report", headers={"Authorization": f"Bearer {tokens['viewer']}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get(f"/api/v1/runs/{simulated.run_id}/report").status_code == 401


HOSTILE_RUN = "<script>alert(1)</script>"
HOSTILE_VALUE = '"><img src=https://evil.example/x onerror=alert(2)>'


def test_hostile_run_names_and_config_values_are_escaped(registry: Registry) -> None:
    registry.store.create_run(
        RunCreate(
            run_id=HOSTILE_RUN,
            task="digits",
            strategy="fedavg",
            num_rounds=2,
            config={"task": {"name": HOSTILE_VALUE}, "note": "</style></title><script>x()</script>"},
            config_hash="0" * 64,
            reason=HOSTILE_VALUE,
        )
    )
    nodes = [{"node_id": 7, "name": HOSTILE_RUN, "data_fingerprint": HOSTILE_VALUE, "data_rows": 10}]
    for rnd in (1, 2):
        registry.register_checkpoint(
            run_id=HOSTILE_RUN, round=rnd, weights=b"w%d" % rnd,
            metrics={"central-accuracy": 0.5 + rnd / 10, "central-loss": 1.0 / rnd, HOSTILE_VALUE: 1.0},
            lineage={"nodes": nodes},
        )  # fmt: skip
    registry.register_version(
        ModelVersionCreate(
            name="digits", run_id=HOSTILE_RUN, checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", b"model"),),
            metrics={"central-accuracy": 0.7}, lineage={"nodes": nodes}, model_config={},
            description=HOSTILE_VALUE,
        )
    )  # fmt: skip
    html = render_run_report(collect_run_report(registry, HOSTILE_RUN, GatesConfig()))
    page = parse(html)
    assert_self_contained(page)  # no <script>, no <img>: every hostile string stayed text
    assert "<script>" not in html and "<img" not in html
    assert (
        HOSTILE_RUN in page.text
        and HOSTILE_VALUE in page.text
        and "</style></title><script>x()</script>" in page.text
    )
    assert page.points("central-accuracy") == ["1", "2"]


@pytest.mark.slow
def test_fedge_report_fetches_the_page_from_a_coordinator_url(simulated: Simulated, tmp_path: Path) -> None:
    import threading
    import time

    import uvicorn

    from fedge.processes import free_port

    config = load_config([f"registry.root={simulated.root}"]).registry
    app = create_app(CoordinatorSettings(registry=config))
    tokens = role_tokens(config.resolved_database_url())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, name="uvicorn-report", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("FEDGE_TOKEN", None)
    try:
        out = tmp_path / "remote.html"
        done = subprocess.run(
            [*FEDGE, "report", simulated.run_id, "--url", url, "--token", tokens["viewer"],
             "--out", str(out)],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        check_simulation_report(out.read_text(encoding="utf-8"), simulated.run_id)
        missing = subprocess.run(
            [*FEDGE, "report", "nope", "--url", url, "--token", tokens["viewer"],
             "--out", str(tmp_path / "n.html")],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert missing.returncode != 0 and "nope" in missing.stderr and "Traceback" not in missing.stderr
        tokenless = subprocess.run(
            [*FEDGE, "report", simulated.run_id, "--url", url, "--out", str(tmp_path / "t.html")],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert tokenless.returncode != 0 and "token" in tokenless.stderr
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_drift_windows_and_triggers_of_the_version_are_reported(registry: Registry, tmp_path: Path) -> None:
    import numpy as np

    from coordinator.drift.aggregate import WindowAggregate
    from coordinator.drift.store import DriftReportStore

    registry.store.create_run(
        RunCreate(
            run_id="r1", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64
        )
    )
    registry.register_checkpoint(
        run_id="r1", round=1, weights=b"w", metrics={"central-accuracy": 0.9}, lineage={"nodes": []}
    )
    version = registry.register_version(
        ModelVersionCreate(
            name="digits", run_id="r1", checkpoint_id=None, artifacts=(registry.put_artifact("onnx", b"m"),),
            metrics={}, lineage={}, model_config={},
        )
    )  # fmt: skip
    drift = DriftReportStore.from_url(f"sqlite:///{tmp_path / 'coordinator.db'}")
    try:
        for window, psi in ((0, 0.05), (1, 0.75)):
            agg = WindowAggregate(
                sites=["site-a", "site-b"], window_rows=400, epsilon=1.0,
                overall={"psi": np.array([psi, psi / 2])},
                per_site={"psi": np.array([[psi, 0.0], [psi, 0.0]])}, classes=None,
            )  # fmt: skip
            drift.put_report(
                model="digits", version=version.number, window=window, features=["f0", "f1"], agg=agg,
                flagged=psi > 0.5, source="edge", stream="cam-1",
            )  # fmt: skip
        drift.add_trigger(
            model="digits", version=version.number, run_id="r2", outcome="requested",
            reason="psi above 0.5 <persistently>", evidence={},
        )  # fmt: skip
        html = render_run_report(collect_run_report(registry, "r1", GatesConfig(), drift=drift))
    finally:
        drift.close()
    page = parse(html)
    assert_self_contained(page)
    cells = [c.strip() for c in page.chunks if c.strip()]
    assert "No drift window" not in page.text
    assert cells.count("edge/cam-1") == 2 and cells.count("flagged") == 1 and "psi max 0.7500" in cells
    assert "psi above 0.5 <persistently>" in cells and "requested" in cells
