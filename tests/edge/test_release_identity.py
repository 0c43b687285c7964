"""The edge follower against a real coordinator on 127.0.0.1: signed identity and refusals by digest.

A registry (or anything on the way) that answers ``digits:2`` with ``digits:1``'s validly signed
bundle is refused, naming both, and the current model keeps serving. The refusal is remembered by
the bundle's digest, not the version number: the same bytes are skipped without being verified
again, and the correct ``digits:2`` is accepted when it appears.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import httpx
import pytest

from edge.agent import ActivationResult
from registry.bundle import assemble_bundle
from tests.edge import test_agent
from tests.edge.test_agent import NAME, Coordinator, activations, make_agent

# The real coordinator on 127.0.0.1 (and its two models) of the agent's tests, one per module.
models = test_agent.models
coordinator = test_agent.coordinator


class ServesAnotherBundle(httpx.BaseTransport):
    """The real network, except that while armed the bundle of ``victim_id`` is answered with ``data``."""

    def __init__(self, victim_id: int, data: bytes) -> None:
        self.inner = httpx.HTTPTransport()
        self.victim_path, self.data = f"/versions/{victim_id}/bundle", data
        self.armed = True
        self.served = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.armed and request.url.path.endswith(self.victim_path):
            self.served += 1
            headers = {
                "X-Content-SHA256": hashlib.sha256(self.data).hexdigest(),
                "Content-Type": "application/zip",
            }
            return httpx.Response(200, headers=headers, content=self.data)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_bundle_signed_for_another_version_is_refused_then_the_right_one_is_accepted(
    coordinator: Coordinator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = coordinator.release(0)
    v1_bundle = assemble_bundle(coordinator.registry, v1)
    agent = make_agent(coordinator, tmp_path / "state")
    assert agent.poll_once().result == "activated"
    v2 = coordinator.release(1)
    transit = ServesAnotherBundle(v2.id, v1_bundle)
    agent.close()
    agent = make_agent(coordinator, tmp_path / "state", transport=transit)
    agent.start_offline()

    with caplog.at_level(logging.WARNING, logger="edge.agent"):
        refused = agent.poll_once()

    # refused, naming both, while v1 keeps serving
    assert (refused.result, refused.reason) == ("refused", "identity_mismatch"), refused
    assert f"manifest is for {NAME}:{v1.number} (id {v1.id}, registry " in refused.message
    assert f"asked for {NAME}:{v2.number} (id {v2.id})" in refused.message
    assert agent.slot.current().version_label == f"{NAME}:{v1.number}"  # type: ignore[union-attr]
    digest = hashlib.sha256(v1_bundle).hexdigest()
    assert agent.state.bad_versions()[digest]["label"] == f"{NAME}:{v2.number}"
    assert agent.state.bad_versions()[digest]["reason"] == "identity_mismatch"
    assert any("identity_mismatch" in r.getMessage() for r in caplog.records)

    # the same bytes again: skipped without verifying them again (one refusal counted)
    again = agent.poll_once()
    assert (again.result, again.reason) == ("skipped", "marked_bad")
    assert activations(agent, "refused", "identity_mismatch") == 1

    # the registry's correct digits:2 appears under the same number: accepted
    transit.armed = False
    accepted = agent.poll_once()
    assert accepted == ActivationResult("activated", f"{NAME}:{v2.number}", "new_version")
    assert agent.slot.current().version_label == f"{NAME}:{v2.number}"  # type: ignore[union-attr]
    assert transit.served == 2
    agent.close()


def test_a_stored_bundle_of_another_version_is_not_served_offline(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    v1 = coordinator.release(0)
    agent = make_agent(coordinator, tmp_path / "state")
    assert agent.poll_once().result == "activated"
    v2 = coordinator.release(1)
    assert agent.poll_once().result == "activated"
    agent.close()
    state = agent.state
    # someone with write access to the state folder puts v1's bundle where v2's is kept
    shutil.copyfile(state.bundle_path(NAME, v1.number), state.bundle_path(NAME, v2.number))

    offline = make_agent(coordinator, tmp_path / "state", url="http://127.0.0.1:9")
    result = offline.start_offline()

    assert (result.result, result.version) == ("activated", f"{NAME}:{v1.number}")
    refusal = [e for e in offline.state.history() if e.get("reason") == "stored_invalid"]
    assert refusal and f"manifest is for {NAME}:{v1.number}" in refusal[-1]["message"]
    assert f"asked for {NAME}:{v2.number}" in refusal[-1]["message"]
    offline.close()
