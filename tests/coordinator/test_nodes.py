"""Node enrolment: validation without a SuperLink, and one real deployment SuperLink for the rest."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from coordinator.deployment.control import FlowerControl
from coordinator.deployment.nodes import NodeRegistry
from coordinator.deployment.superlink import ManagedSuperLink
from fedge.errors import ConfigError, ConflictError, FederationError, NotFoundError
from fedge.processes import free_port
from fedge.tls import TlsFiles, generate_node_keypair, init_federation_tls
from tests.processes import processes_under


# --- factories ------------------------------------------------------------------------------------
@pytest.fixture
def offline(tmp_path: Path) -> Iterator[NodeRegistry]:
    """A node registry on a real SQLite file, with no SuperLink behind it."""
    nodes = NodeRegistry.from_url(f"sqlite:///{tmp_path / 'nodes.db'}", control=None)
    yield nodes
    nodes.close()


def _public_key(folder: Path, name: str) -> bytes:
    return generate_node_keypair(folder, name)[1].read_bytes()


def _ssh_public(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


# --- validation, no SuperLink ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "   ", "hospital a", "../etc", "x" * 129, "a/b", "name;drop"])
def test_an_invalid_name_is_refused_before_the_key_is_read(offline: NodeRegistry, name: str) -> None:
    with pytest.raises(ConfigError, match="node name") as info:
        offline.enroll(name=name, public_key=b"not even a key", actor="admin")

    assert info.value.code == "config_invalid"
    assert offline.list() == []


def test_a_private_key_is_refused_saying_to_send_the_pub_file(offline: NodeRegistry, tmp_path: Path) -> None:
    private_path, _ = generate_node_keypair(tmp_path, "hospital-a")

    with pytest.raises(ConfigError, match="PRIVATE key") as info:
        offline.enroll(name="hospital-a", public_key=private_path.read_bytes(), actor="admin")

    assert ".pub" in str(info.value)
    assert offline.list() == []


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (b"garbage, not a key at all", "not an OpenSSH or PEM public key"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not an OpenSSH or PEM public key"),
        (_ssh_public(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "not an EC key"),
        (_ssh_public(ed25519.Ed25519PrivateKey.generate()), "not an EC key"),
        (
            ec.generate_private_key(ec.SECP256K1())
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            "not a NIST curve",
        ),
    ],
    ids=["garbage", "bad-pem", "rsa", "ed25519", "secp256k1"],
)
def test_a_key_flower_cannot_use_is_refused_naming_the_problem(
    offline: NodeRegistry, key: bytes, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        offline.enroll(name="hospital-a", public_key=key, actor="admin")

    assert offline.list() == []


def test_a_valid_key_without_a_superlink_is_a_federation_error_and_nothing_is_stored(
    offline: NodeRegistry, tmp_path: Path
) -> None:
    key = _public_key(tmp_path, "hospital-a")

    with pytest.raises(FederationError, match="fedge coordinator serve"):
        offline.enroll(name="hospital-a", public_key=key, actor="admin")

    assert offline.list() == []
    with pytest.raises(NotFoundError, match="hospital-a"):
        offline.revoke("hospital-a", actor="admin")


class _RegistersOnly:
    """The SuperLink edge for enrolment only: it registers every key as Flower node 42."""

    def register_node(self, public_key_pem: bytes, name: str) -> int:
        return 42


def test_revoking_while_the_superlink_is_unreachable_fails_and_keeps_the_node(tmp_path: Path) -> None:
    nodes = NodeRegistry.from_url(f"sqlite:///{tmp_path / 'nodes.db'}", control=_RegistersOnly())  # type: ignore[arg-type]
    nodes.enroll(name="hospital-a", public_key=_public_key(tmp_path, "hospital-a"), actor="admin")
    nodes.control = FlowerControl(f"127.0.0.1:{free_port()}", None)  # nothing listens there
    try:
        with pytest.raises(FederationError, match=r"cannot list nodes|unregister"):
            nodes.revoke("hospital-a", actor="admin")
        assert [n.revoked_at for n in nodes.list()] == [None]
    finally:
        nodes.control.close()
        nodes.close()


# --- a real deployment SuperLink ------------------------------------------------------------------
@pytest.mark.slow
def test_enrol_conflict_revoke_and_reconcile_on_a_real_superlink(tmp_path: Path) -> None:
    started = time.monotonic()
    tls = init_federation_tls(tmp_path / "tls", ["localhost"])
    ca = tls.ca_cert.read_bytes()
    home = tmp_path / "sl"
    key_a = _public_key(tmp_path / "keys", "hospital-a")
    key_b = _public_key(tmp_path / "keys", "hospital-b")
    nodes = NodeRegistry.from_url(f"sqlite:///{tmp_path / 'nodes.db'}", control=None)
    try:
        with ManagedSuperLink(
            home, simulation=False, tls=TlsFiles.in_dir(tmp_path / "tls"), node_auth=True, state_file=True
        ) as sl:
            control = FlowerControl(sl.address, ca)
            nodes.control = control
            try:
                a = nodes.enroll(name="hospital-a", public_key=key_a, actor="admin-1")
                b = nodes.enroll(name="hospital-b", public_key=key_b, actor="admin-1")
                with pytest.raises(ConflictError, match="already enrolled"):
                    nodes.enroll(name="hospital-a", public_key=_public_key(tmp_path, "other"), actor="x")
                with pytest.raises(ConflictError, match="hospital-a"):
                    nodes.enroll(name="hospital-c", public_key=key_a, actor="x")
                listed = {n.name: n for n in nodes.list()}

                revoked = nodes.revoke("hospital-b", actor="admin-2")
                flower_after = {n.node_id: n for n in control.list_nodes()}
                listed_after = {n.name: n for n in nodes.list()}
                with pytest.raises(ConflictError, match="revoked"):
                    nodes.enroll(name="hospital-b", public_key=key_b, actor="admin-1")
                with pytest.raises(NotFoundError):
                    nodes.revoke("hospital-b", actor="admin-2")
            finally:
                control.close()

        assert a.flower_node_id and b.flower_node_id and a.flower_node_id != b.flower_node_id
        assert {name: n.state for name, n in listed.items()} == {
            "hospital-a": "registered",
            "hospital-b": "registered",
        }
        assert listed["hospital-a"].flower_node_id == a.flower_node_id
        assert listed["hospital-a"].key_sha256 == a.key_sha256 != b.key_sha256
        assert revoked.state == "revoked" and revoked.revoked_at is not None
        assert listed_after["hospital-b"].state == "revoked"
        assert listed_after["hospital-a"].state == "registered"
        gone = flower_after.get(b.flower_node_id)
        assert gone is None or gone.status not in ("registered", "online")
        assert flower_after[a.flower_node_id].status == "registered"

        # A SuperLink whose state was lost (its file deleted; a memory-state SuperLink restarted):
        # reconcile registers the active enrolment again.
        (home / "superlink-state.db").unlink()
        with ManagedSuperLink(
            home, simulation=False, tls=TlsFiles.in_dir(tmp_path / "tls"), node_auth=True
        ) as fresh:
            control = FlowerControl(fresh.address, ca)
            nodes.control = control
            try:
                assert control.list_nodes() == []
                fixed = nodes.reconcile()
                again = nodes.reconcile()
                flower_nodes = control.list_nodes()
                final = {n.name: n for n in nodes.list()}
            finally:
                control.close()

        assert (fixed, again) == (1, 0)
        assert [(n.name, n.status) for n in flower_nodes] == [("hospital-a", "registered")]
        assert final["hospital-a"].state == "registered"
        assert final["hospital-a"].flower_node_id == flower_nodes[0].node_id
        assert final["hospital-b"].state == "revoked"
    finally:
        nodes.close()

    assert processes_under(tmp_path) == []
    assert time.monotonic() - started < 30
