"""The edge follower as a witness of the registry's audit log, against a real coordinator on 127.0.0.1.

Each release manifest carries the registry's signed audit head. The edge keeps the last one in its
state folder; after the registry's database is rewritten (an old entry altered, every chain hash
and tree node recomputed, the next head signed by the registry itself), the next release's head
cannot be proven consistent with the one the edge kept: the update is refused as
``audit_inconsistent`` and the current model keeps serving.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from fedge.audit_witness import HEAD_FILE
from fedge.tasks import get_task
from registry import ModelVersion, ModelVersionCreate
from registry.bundle import bind_identity, prepare_release, store_release, with_audit_head
from tests.edge import test_agent
from tests.edge.test_agent import NAME, Coordinator, make_agent
from tests.security.test_transparency_log import _rewrite

models = test_agent.models
coordinator = test_agent.coordinator


def release_with_head(coordinator: Coordinator, which: int) -> ModelVersion:
    """What registry.bundle.release_version does: the registry's signed audit head in the manifest."""
    reg, key = coordinator.registry, coordinator.key
    spec = get_task(NAME).input_spec
    draft = ModelVersionCreate(
        NAME, None, None, (reg.put_artifact("onnx", coordinator.models.onnx[which]),), {}, {}, {"task": NAME}
    )
    release = prepare_release(
        version=draft,
        onnx_bytes=coordinator.models.onnx[which],
        private_key=key,
        reference_inputs=coordinator.models.rows,
        preprocessing={"features": list(spec.feature_names), "value_range": [spec.value_min, spec.value_max]},
        int8_bytes=coordinator.models.int8[which],
    )
    release = with_audit_head(release, reg.store.signed_audit_head())
    version = reg.register_version(
        draft, attach=lambda identity: store_release(reg, bind_identity(release, identity, key))
    )
    return reg.store.set_alias(NAME, "production", version.id, actor="test")


def test_the_edge_keeps_the_head_and_refuses_a_registry_whose_log_was_rewritten(
    coordinator: Coordinator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    v1 = release_with_head(coordinator, 0)
    agent = make_agent(coordinator, state)
    assert agent.poll_once().result == "activated"
    first = json.loads((state / HEAD_FILE).read_text())

    for i in range(5):  # the log grows honestly: the next head is proven to extend the first
        coordinator.registry.store.append_audit(action="test", actor="t", subject=f"s{i}", details={})
    v2 = release_with_head(coordinator, 1)
    assert agent.poll_once().result == "activated"
    second = json.loads((state / HEAD_FILE).read_text())
    assert second["tree_size"] > first["tree_size"]

    store: Any = coordinator.registry.store  # the SQL store, on the registry's SQLite file
    db = Path(store.engine.url.database or "")
    _rewrite(db.parent, 1, "forged")  # altered entry 1, chain and tree recomputed
    coordinator.registry.store.append_audit(action="test", actor="t", subject="after", details={})
    release_with_head(coordinator, 0)  # its manifest carries a head the registry signed over the rewrite
    with caplog.at_level(logging.WARNING, logger="edge.agent"):
        refused = agent.poll_once()

    assert (refused.result, refused.reason) == ("refused", "audit_inconsistent"), refused
    assert f"is not consistent with the head of {second['tree_size']} entries" in refused.message
    assert agent.slot.current().version_label == f"{NAME}:{v2.number}"  # type: ignore[union-attr]
    assert json.loads((state / HEAD_FILE).read_text()) == second  # the witness keeps the honest head
    assert not agent.state.bad_versions()  # the bundle is not at fault: not remembered as bad
    assert any("audit_inconsistent" in r.getMessage() for r in caplog.records)
    assert v1.number < v2.number
    agent.close()
