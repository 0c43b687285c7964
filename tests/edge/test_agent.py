"""The edge agent against a real coordinator on 127.0.0.1: activate, refuse, roll back, serve offline."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
import uvicorn
from fastapi import FastAPI

from coordinator.api import CoordinatorSettings, create_app
from coordinator.auth import TokenStore
from edge import ModelRuntime, ModelSlot, ServingMetrics, create_serving_app
from edge.agent import ActivationResult, EdgeAgent, EdgeSettings, NoModelAvailableError, ObservedRuntime
from fedge.crypto import Ed25519PrivateKey, generate_private_key, sign
from fedge.release_format import MODEL, ReleaseIdentity, VerifiedBundle, canonical_manifest_bytes, zip_members
from fedge.tasks import TaskConfig, get_task
from registry import ArtifactRef, ModelVersion, ModelVersionCreate, Registry, RegistryConfig, export_onnx
from registry.bundle import Release, bind_identity, prepare_release, store_release
from registry.quantize import quantize_int8
from tests.apps import device_token

NAME = "digits"


class Served:
    """An ASGI app served by uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@dataclass
class Models:
    onnx: list[bytes]
    int8: list[bytes]
    rows: np.ndarray


@dataclass
class Coordinator:
    url: str
    token: str  # a viewer's: reads what devices reported
    registry: Registry
    key: Ed25519PrivateKey
    models: Models
    database_url: str = ""

    def device_token(self, device: str) -> str:
        """A device token bound to ``device``: what an edge agent follows and reports with."""
        return device_token(self.database_url, device)

    def release(
        self,
        which: int,
        *,
        key: Ed25519PrivateKey | None = None,
        spoil_expected: bool = False,
        alias: str = "production",
        drift: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Register model ``which`` as a new signed version and point ``alias`` at it."""
        reg, key = self.registry, key or self.key
        onnx_bytes, int8_bytes = self.models.onnx[which], self.models.int8[which]
        task = get_task(NAME)
        spec = task.input_spec
        draft = ModelVersionCreate(
            NAME, None, None, (reg.put_artifact("onnx", onnx_bytes),), {}, {}, {"task": NAME}
        )
        release = prepare_release(
            version=draft,
            onnx_bytes=onnx_bytes,
            private_key=key,
            reference_inputs=self.models.rows,
            preprocessing={
                "features": list(spec.feature_names),
                "value_range": [spec.value_min, spec.value_max],
                **({"drift": drift["manifest"]} if drift else {}),
            },
            int8_bytes=int8_bytes,
        )

        def sign_for(identity: ReleaseIdentity) -> tuple[ArtifactRef, ...]:
            bound = bind_identity(release, identity, key)
            if spoil_expected:  # a correctly signed manifest whose outputs no runtime reproduces
                manifest = copy.deepcopy(bound.manifest)
                expected = manifest["reference"]["expected_outputs"]
                expected[MODEL] = (np.asarray(expected[MODEL]) + 5.0).tolist()
                data = canonical_manifest_bytes(manifest)
                bound = Release(manifest, data, sign(key, data), bound.files)
            return store_release(reg, bound)

        lineage = {"drift_reference": drift["reference"]} if drift else {}
        version = reg.register_version(
            ModelVersionCreate(NAME, draft.run_id, None, draft.artifacts, {}, lineage, {"task": NAME}),
            attach=sign_for,
        )
        return reg.store.set_alias(NAME, alias, version.id, actor="test")


@pytest.fixture(scope="module")
def models() -> Models:
    return build_models()


def build_models() -> Models:
    """Two different tiny digits models, exported and quantized once (the exporter takes seconds)."""
    task = get_task(NAME)
    cfg = TaskConfig(hidden=8)
    onnx, int8 = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        data = export_onnx(task.build_model(cfg), task.input_spec.shape)
        onnx.append(data)
        int8.append(quantize_int8(data))
    _, test = task.split_holdout(cfg)
    return Models(onnx, int8, np.ascontiguousarray(test.x[:64], dtype=np.float32))


@pytest.fixture(scope="module")
def coordinator(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    config = RegistryConfig(root=str(tmp_path_factory.mktemp("reg")))
    app = create_app(CoordinatorSettings(registry=config))
    tokens = TokenStore.from_url(config.resolved_database_url())
    _, token = tokens.create(name="dashboard", role="viewer")
    tokens.close()
    served = Served(app)
    yield Coordinator(
        served.url, token, app.state.registry, generate_private_key(), models, config.resolved_database_url()
    )
    served.stop()


def make_agent(
    coordinator: Coordinator,
    state: Path,
    *,
    url: str | None = None,
    slot: ModelSlot | None = None,
    metrics: ServingMetrics | None = None,
    transport: httpx.BaseTransport | None = None,
    runtime_factory: Callable[[VerifiedBundle, Any, str], ModelRuntime] | None = None,
    **settings: Any,
) -> EdgeAgent:
    return EdgeAgent(
        EdgeSettings(
            registry_url=url or coordinator.url,
            name=NAME,
            alias="production",
            public_key=coordinator.key.public_key(),
            state_dir=str(state),
            token=coordinator.device_token(settings.get("device_name", "edge")),
            poll_interval_s=0.05,
            **settings,
        ),
        slot=slot,
        metrics=metrics,
        transport=transport,
        runtime_factory=runtime_factory,
    )


def activations(agent: EdgeAgent, result: str, reason: str) -> float:
    value = agent.metrics.activations.labels(result, reason)._value.get()
    return float(value)


def refusals(agent: EdgeAgent, label: str) -> list[str]:
    """The reasons of the bundles refused under ``label`` (refusals are kept by bundle digest)."""
    return [e["reason"] for e in agent.state.bad_versions().values() if e["label"] == label]


def raw_outputs(onnx_bytes: bytes, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: rows})[0])


@pytest.fixture
def serving(coordinator: Coordinator, tmp_path: Path) -> Iterator[tuple[EdgeAgent, ModelVersion]]:
    """An agent that has activated a fresh release of model 0."""
    v1 = coordinator.release(0)
    agent = make_agent(coordinator, tmp_path / "state")
    assert agent.poll_once() == ActivationResult("activated", f"{NAME}:{v1.number}", "new_version")
    yield agent, v1
    agent.close()


def test_activates_a_signed_bundle_and_predicts_like_onnxruntime(
    serving: tuple[EdgeAgent, ModelVersion], coordinator: Coordinator, tmp_path: Path
) -> None:
    agent, v1 = serving
    rows = coordinator.models.rows

    runtime = agent.slot.current()

    assert runtime is not None and runtime.version_label == f"{NAME}:{v1.number}"
    np.testing.assert_allclose(
        runtime.predict(rows), raw_outputs(coordinator.models.onnx[0], rows), atol=1e-6
    )
    assert agent.state.active() is not None and agent.state.active().number == v1.number  # type: ignore[union-attr]
    assert (tmp_path / "state" / "versions" / f"{NAME}-{v1.number}" / "bundle.zip").is_file()
    assert agent.poll_once().result == "unchanged"
    assert activations(agent, "activated", "new_version") == 1


def test_switches_on_promotion_with_no_failed_request(
    serving: tuple[EdgeAgent, ModelVersion], coordinator: Coordinator
) -> None:
    agent, v1 = serving
    app = create_serving_app(agent.slot, batching=True, status_provider=agent.status)
    server = Served(app)
    rows = coordinator.models.rows[:4].tolist()
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                response = client.post("/v1/predict", json={"rows": rows})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.add(response.json()["version"])

    thread = threading.Thread(target=client_loop)
    try:
        thread.start()
        time.sleep(0.3)
        v2 = coordinator.release(1)
        result = agent.poll_once()
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=10)
        server.stop()

    assert result.result == "activated" and result.version == f"{NAME}:{v2.number}"
    assert statuses and all(s == 200 for s in statuses), f"failed requests: {set(statuses)}"
    assert versions == {f"{NAME}:{v1.number}", f"{NAME}:{v2.number}"}
    assert agent.state.previous() is not None and agent.state.previous().number == v1.number  # type: ignore[union-attr]


def assert_refused(
    agent: EdgeAgent,
    result: ActivationResult,
    reason: str,
    serving_label: str,
    caplog: pytest.LogCaptureFixture,
    match: str,
) -> None:
    assert result.result == "refused" and result.reason == reason, result
    runtime = agent.slot.current()
    assert runtime is not None and runtime.version_label == serving_label
    assert activations(agent, "refused", reason) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(reason in m and match in m for m in warnings), warnings
    assert agent.state.history()[-1]["reason"] == reason


def test_bundle_signed_by_another_key_is_refused(
    serving: tuple[EdgeAgent, ModelVersion], coordinator: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    agent, v1 = serving
    v2 = coordinator.release(1, key=generate_private_key())

    with caplog.at_level(logging.WARNING, logger="edge.agent"):
        result = agent.poll_once()

    assert_refused(agent, result, "bad_signature", f"{NAME}:{v1.number}", caplog, "signature does not verify")
    assert refusals(agent, f"{NAME}:{v2.number}") == ["bad_signature"]
    assert agent.poll_once().result == "skipped", "a refused bundle is not verified again"


def test_bundle_whose_reference_outputs_do_not_reproduce_is_refused(
    serving: tuple[EdgeAgent, ModelVersion], coordinator: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    agent, v1 = serving
    coordinator.release(1, spoil_expected=True)

    with caplog.at_level(logging.WARNING, logger="edge.agent"):
        result = agent.poll_once()

    assert_refused(agent, result, "health_check", f"{NAME}:{v1.number}", caplog, "expected outputs")


class InTransit(httpx.BaseTransport):
    """The real network, with the bundle's response body rewritten on its way (a proxy, a bad link)."""

    def __init__(self, rewrite: Callable[[httpx.Response], httpx.Response]) -> None:
        self.inner = httpx.HTTPTransport()
        self.rewrite = rewrite
        self.armed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not self.armed or not request.url.path.endswith("/bundle"):
            return response
        response.read()
        return self.rewrite(response)

    def close(self) -> None:
        self.inner.close()


def truncated(response: httpx.Response) -> httpx.Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return httpx.Response(response.status_code, headers=headers, content=response.content[:1000])


def tampered(response: httpx.Response) -> httpx.Response:
    """Flip one byte of model.onnx and send a transfer digest that matches the altered zip."""
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    model = bytearray(members[MODEL])
    model[-1] ^= 0x01
    members[MODEL] = bytes(model)
    data = zip_members(members)
    headers = {
        k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "x-content-sha256")
    }
    headers["X-Content-SHA256"] = hashlib.sha256(data).hexdigest()
    return httpx.Response(response.status_code, headers=headers, content=data)


@pytest.mark.parametrize(
    ("rewrite", "reason", "match", "marked_bad"),
    [
        (truncated, "download_incomplete", "cut or altered in transit", False),
        (tampered, "artifact_digest", "altered or replaced after signing", True),
    ],
)
def test_download_cut_or_altered_in_transit_is_refused(
    coordinator: Coordinator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    rewrite: Callable[[httpx.Response], httpx.Response],
    reason: str,
    match: str,
    marked_bad: bool,
) -> None:
    v1 = coordinator.release(0)
    transit = InTransit(rewrite)
    agent = make_agent(coordinator, tmp_path / "state", transport=transit)
    assert agent.poll_once().result == "activated"
    v2 = coordinator.release(1)
    transit.armed = True

    with caplog.at_level(logging.WARNING, logger="edge.agent"):
        result = agent.poll_once()

    assert_refused(agent, result, reason, f"{NAME}:{v1.number}", caplog, match)
    assert bool(refusals(agent, f"{NAME}:{v2.number}")) is marked_bad
    agent.close()


class Misbehaving(ModelRuntime):
    """A runtime whose outputs drift from what its manifest promises (a broken accelerator)."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return super().predict(x) + 1.0


def test_activated_model_failing_its_health_check_rolls_back_by_itself(
    coordinator: Coordinator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = coordinator.release(0)
    broken: set[str] = set()

    def factory(verified: VerifiedBundle, precision: Any, label: str) -> ModelRuntime:
        cls = Misbehaving if label in broken else ObservedRuntime
        return cls.from_verified(verified, precision, label)

    agent = make_agent(coordinator, tmp_path / "state", runtime_factory=factory)
    assert agent.poll_once().result == "activated"
    v2 = coordinator.release(1)
    broken.add(f"{NAME}:{v2.number}")

    with caplog.at_level(logging.WARNING, logger="edge.agent"):
        result = agent.poll_once()

    assert (result.result, result.reason) == ("rolled_back", "health_check")
    assert agent.slot.current().version_label == f"{NAME}:{v1.number}"  # type: ignore[union-attr]
    assert agent.state.active().number == v1.number  # type: ignore[union-attr]
    assert activations(agent, "rolled_back", "health_check") == 1
    assert any("rolled_back" in r.getMessage() for r in caplog.records)


def test_rollback_returns_to_the_previous_version(
    serving: tuple[EdgeAgent, ModelVersion], coordinator: Coordinator
) -> None:
    agent, v1 = serving
    v2 = coordinator.release(1)
    assert agent.poll_once().result == "activated"

    result = agent.rollback()

    assert (result.result, result.version) == ("rolled_back", f"{NAME}:{v1.number}")
    assert agent.slot.current().version_label == f"{NAME}:{v1.number}"  # type: ignore[union-attr]
    assert refusals(agent, f"{NAME}:{v2.number}") == ["operator"]
    assert agent.poll_once().result == "skipped", "the alias still points at the abandoned version"


def test_offline_start_serves_the_cached_model(
    serving: tuple[EdgeAgent, ModelVersion], coordinator: Coordinator, tmp_path: Path
) -> None:
    _, v1 = serving
    offline = make_agent(coordinator, tmp_path / "state", url="http://127.0.0.1:9")

    result = offline.start_offline()

    assert (result.result, result.reason) == ("activated", "offline_start")
    runtime = offline.slot.current()
    assert runtime is not None and runtime.version_label == f"{NAME}:{v1.number}"
    assert offline.poll_once().result == "unreachable"
    assert offline.slot.current() is runtime


def test_offline_start_without_a_model_is_a_clear_error(coordinator: Coordinator, tmp_path: Path) -> None:
    agent = make_agent(coordinator, tmp_path / "empty", url="http://127.0.0.1:9")

    with pytest.raises(NoModelAvailableError, match=r"no activated model in .* connect the device") as info:
        agent.start_offline()
    assert info.value.code == "edge_no_model"


def test_report_counts_served_rows_into_bins(coordinator: Coordinator, tmp_path: Path) -> None:
    v1 = coordinator.release(0)
    agent = make_agent(coordinator, tmp_path / "state", device_name="device-7")
    assert agent.poll_once().result == "activated"
    app = create_serving_app(agent.slot, batching=False, metrics=agent.metrics)
    rows = coordinator.models.rows[:5]
    server = Served(app)
    try:
        with httpx.Client(base_url=server.url) as client:
            for _ in range(3):
                assert client.post("/v1/predict", json={"rows": rows.tolist()}).status_code == 200
    finally:
        server.stop()

    body = agent.report()
    sent = agent.report_once()

    assert body["served"] == 15 and body["model"] == {"name": NAME, "version": str(v1.number)}
    assert len(body["drift"]["bin_edges"]) == 11
    first = next(iter(body["drift"]["counts"].values()))
    assert len(first) == 10 and sum(first) == 15
    assert body["health"]["status"] == "ok"
    assert sent is True
    devices = httpx.get(
        f"{coordinator.url}/api/v1/edge/devices", headers={"Authorization": f"Bearer {coordinator.token}"}
    ).json()
    assert any(d["device"] == "device-7" for d in devices)
    assert agent.report()["served"] == 0, "a sent window starts again"
    agent.close()


def test_report_to_an_unreachable_coordinator_is_ignored(
    serving: tuple[EdgeAgent, ModelVersion], coordinator: Coordinator, tmp_path: Path
) -> None:
    offline = make_agent(coordinator, tmp_path / "state", url="http://127.0.0.1:9")
    assert offline.start_offline().result == "activated", "a model serves: only the report is at stake"

    assert offline.report_once() is False
    offline.close()


def test_run_forever_backs_off_and_stops(coordinator: Coordinator, tmp_path: Path) -> None:
    agent = make_agent(coordinator, tmp_path / "state", url="http://127.0.0.1:9", max_backoff_s=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run_forever, args=(stop,))

    thread.start()
    time.sleep(0.5)
    stop.set()
    thread.join(timeout=5)

    assert not thread.is_alive()
    assert agent._failures >= 2
    assert all(0 < agent.next_delay() <= 0.2 for _ in range(50))


def test_slot_and_metrics_are_shared_with_the_server(coordinator: Coordinator, tmp_path: Path) -> None:
    metrics = ServingMetrics()
    slot = ModelSlot(metrics=metrics)
    coordinator.release(0)
    agent = make_agent(coordinator, tmp_path / "state", slot=slot, metrics=metrics)

    agent.poll_once()

    assert slot.current() is not None
    assert b'fedge_edge_activations_total{reason="new_version",result="activated"} 1.0' in metrics.render()


def test_a_release_with_drift_bins_pushes_noisy_windows_instead_of_exact_counts(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    from coordinator.drift.reference import manifest_entry
    from fedge.config import DriftSettings
    from fedge.drift import fixed_bin_edges, histogram_counts
    from fedge.drift_summary import DriftReference

    rows = np.random.default_rng(0).random((250, 64))
    features = [19, 20, 27, 28]
    edges = fixed_bin_edges(np.zeros(4), np.ones(4), 5)
    number = len(coordinator.registry.store.list_versions(name=NAME)) + 1
    reference = DriftReference(
        NAME, number, features, [f"p{i}" for i in features], edges,
        histogram_counts(rows[:, features], edges).astype(float), None, 1.0, 3,
    )  # fmt: skip
    version = coordinator.release(
        0, drift={"manifest": manifest_entry(reference), "reference": reference.to_dict()}
    )
    agent = make_agent(coordinator, tmp_path / "state", drift=DriftSettings(), device_name="device-d")
    try:
        assert agent.poll_once().result == "activated"
        agent.observe(rows)

        body = agent.report()
        assert agent.report_once() is True
    finally:
        agent.close()

    assert body["drift"] == {"bin_edges": [], "counts": {}}, "exact counts stay on the device"
    reports = httpx.get(
        f"{coordinator.url}/api/v1/drift/reports",
        params={"model": NAME, "version": version.number},
        headers={"Authorization": f"Bearer {coordinator.token}"},
    ).json()
    assert [(r["sites"], r["window_rows"]) for r in reports] == [(["device-d"], 250)]
    ledger = json.loads((tmp_path / "state" / "privacy-ledger.json").read_text())
    assert [e["epsilon"] for e in ledger["entries"]] == [1.0]
