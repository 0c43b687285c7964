"""The real ``fedge tokens create --role device --device NAME``: bound to a device, audited, listed."""

from __future__ import annotations

import json
from pathlib import Path

from coordinator.auth import TokenStore
from registry import RegistryConfig, open_registry
from tests.cli.test_cli_errors import run_fedge


def test_a_device_token_needs_its_device_and_authenticates_as_it(tmp_path: Path) -> None:
    root = tmp_path / "reg"

    unbound = run_fedge(
        "tokens", "create", "--role", "device", "--name", "cam", "--root", str(root), cwd=tmp_path
    )
    viewer_bound = run_fedge(
        "tokens", "create", "--role", "viewer", "--name", "v", "--device", "cam-17", "--root", str(root),
        cwd=tmp_path,
    )  # fmt: skip
    created = run_fedge(
        "tokens", "create", "--role", "device", "--name", "cam", "--device", "cam-17", "--root", str(root),
        cwd=tmp_path,
    )  # fmt: skip
    listed = run_fedge("tokens", "list", "--root", str(root), "--json", cwd=tmp_path)

    assert unbound.returncode == 2 and "add --device NAME" in unbound.stderr
    assert viewer_bound.returncode == 2 and "a 'viewer' token takes none" in viewer_bound.stderr
    assert created.returncode == 0, created.stderr
    assert "(cam, device, device cam-17)" in created.stderr
    assert {"name": "cam", "role": "device", "device": "cam-17", "revoked_at": None}.items() <= json.loads(
        listed.stdout
    )[0].items()
    url = RegistryConfig(root=str(root)).resolved_database_url()
    store = TokenStore.from_url(url)
    try:
        principal = store.authenticate(created.stdout.strip())
    finally:
        store.close()
    assert (principal.role, principal.device) == ("device", "cam-17")
    registry = open_registry(RegistryConfig(root=str(root)))
    try:
        entry = registry.store.list_audit()[-1]
    finally:
        registry.close()
    assert entry.action == "token.created" and entry.details["device"] == "cam-17"
