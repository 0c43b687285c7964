"""The real ``fedge`` command for promotions, approvals, the audit log and tokens."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from registry import ModelVersionCreate, RegistryConfig, RunCreate, open_registry
from tests.cli.test_cli_errors import run_fedge


def _seed(root: Path) -> None:
    reg = open_registry(RegistryConfig(root=str(root)))
    reg.store.create_run(
        RunCreate(run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64)
    )
    reg.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r",
            checkpoint_id=None,
            artifacts=(reg.put_artifact("onnx", b"x"),),
            metrics={"central-accuracy": 0.95, "onnx-parity-max-abs-diff": 1e-6},
            lineage={"nodes": [{"node_id": 1, "eval_metrics": {"eval-accuracy": 0.9}}]},
            model_config={},
        ),
        aliases=("candidate",),
    )
    reg.close()


def test_promotion_refused_then_approved_then_moved_and_audited(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    _seed(root)
    common = ["--root", str(root)]

    refused = run_fedge("registry", "promote", "digits:1=production", "--reason", "r1", *common, cwd=tmp_path)
    approved = run_fedge(
        "registry", "approve", "digits:1", "--alias", "production", "--as", "alice", *common, cwd=tmp_path
    )
    promoted = run_fedge(
        "registry",
        "promote",
        "digits:1=production",
        "digits:1=staging",
        "--reason",
        "r2",
        "--as",
        "bob",
        *common,
        cwd=tmp_path,
    )
    verified = run_fedge("audit", "verify", *common, cwd=tmp_path)
    exported = run_fedge("audit", "export", *common, cwd=tmp_path)

    assert refused.returncode == 1
    assert refused.stderr.strip().startswith(
        "error [gate_refused]: promotion refused: digits:1 -> production"
    )
    assert "0 of 1 approvals" in refused.stderr
    assert approved.returncode == 0 and "as alice" in approved.stdout
    assert promoted.returncode == 0, promoted.stderr
    assert "now holds candidate, production, staging" in promoted.stdout
    assert verified.returncode == 0 and "audit log intact" in verified.stdout
    actions = [json.loads(line)["action"] for line in exported.stdout.splitlines()]
    assert actions == [
        "version.registered",
        "alias.moved",
        "gate.refused",
        "approval.given",
        "alias.moved",
        "alias.moved",
    ]


def test_audit_verify_finds_an_altered_entry(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    _seed(root)
    with sqlite3.connect(root / "registry.db") as conn:
        conn.execute("UPDATE audit_log SET subject = 'digits:99' WHERE seq = 1")

    result = run_fedge("audit", "verify", "--root", str(root), cwd=tmp_path)

    assert result.returncode == 1
    assert "audit log broken at entry 1" in result.stderr and "altered" in result.stderr


def test_tokens_are_shown_once_and_stored_hashed(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    _seed(root)

    created = run_fedge(
        "tokens", "create", "--role", "viewer", "--name", "dashboard", "--root", str(root), cwd=tmp_path
    )
    listed = run_fedge("tokens", "list", "--root", str(root), "--json", cwd=tmp_path)
    bad_role = run_fedge(
        "tokens", "create", "--role", "root", "--name", "x", "--root", str(root), cwd=tmp_path
    )

    secret = created.stdout.strip()
    assert created.returncode == 0 and secret.startswith("fedge_")
    assert [(t["name"], t["role"], t["revoked_at"]) for t in json.loads(listed.stdout)] == [
        ("dashboard", "viewer", None)
    ]
    assert secret not in listed.stdout
    assert secret.encode() not in (root / "registry.db").read_bytes()
    assert bad_role.returncode == 2 and "unknown role 'root'" in bad_role.stderr
