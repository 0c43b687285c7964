"""Federation TLS and node keys: certificates chain and serve real TLS; node keys are what Flower reads."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedge.errors import ConfigError, ConflictError
from fedge.tls import (
    TlsFiles,
    create_ca,
    generate_node_keypair,
    init_federation_tls,
    issue_server_certificate,
    load_node_public_key,
    public_key_fingerprint,
)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def _tls_server(files: TlsFiles) -> Iterator[int]:
    """A one-connection TLS echo server on 127.0.0.1 serving ``files``' certificate; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(16))
        except (ssl.SSLError, OSError):
            pass  # the client refused the certificate: that is what some tests expect

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)


def _handshake(port: int, ca_file: Path, server_hostname: str) -> bytes:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(b"ping")
        return tls.recv(16)


def test_init_writes_a_ca_and_a_server_certificate_that_chains_to_it(tmp_path: Path) -> None:
    files = init_federation_tls(tmp_path / "tls", ["flower.example.org", "10.0.0.5"])

    ca, server = _cert(files.ca_cert), _cert(files.server_cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value == x509.BasicConstraints(
        ca=True, path_length=0
    )
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"flower.example.org", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    server_key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert server_key.public_key() == server.public_key()


def test_private_keys_are_owner_only_and_certificates_are_readable(tmp_path: Path) -> None:
    files = init_federation_tls(tmp_path, ["localhost"])

    assert _mode(files.server_key) == 0o600
    assert _mode(tmp_path / "ca.key") == 0o600
    assert _mode(files.ca_cert) == 0o644
    assert TlsFiles.in_dir(tmp_path) == files


def test_a_tls_client_trusting_the_ca_completes_a_handshake(tmp_path: Path) -> None:
    files = init_federation_tls(tmp_path, ["flower.example.org"])

    for hostname in ("localhost", "127.0.0.1", "flower.example.org"):
        with _tls_server(files) as port:
            assert _handshake(port, files.ca_cert, hostname) == b"ping"


def test_a_client_trusting_another_ca_or_dialing_another_name_refuses_the_server(tmp_path: Path) -> None:
    files = init_federation_tls(tmp_path / "a", ["flower.example.org"])
    other = init_federation_tls(tmp_path / "b", ["flower.example.org"])

    with _tls_server(files) as port, pytest.raises(ssl.SSLCertVerificationError, match="unable to get local"):
        _handshake(port, other.ca_cert, "flower.example.org")
    with _tls_server(files) as port, pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(port, files.ca_cert, "evil.example.org")


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    first = init_federation_tls(tmp_path, ["a.example.org"])
    ca_before = first.ca_cert.read_bytes()

    with pytest.raises(ConflictError, match=r"ca\.crt.*refusing to overwrite.*--force") as info:
        init_federation_tls(tmp_path, ["a.example.org"])
    assert info.value.code == "conflict"
    assert first.ca_cert.read_bytes() == ca_before

    init_federation_tls(tmp_path, ["a.example.org"], overwrite=True)
    assert first.ca_cert.read_bytes() != ca_before
    assert _mode(first.server_key) == 0o600


def test_in_dir_names_the_missing_file(tmp_path: Path) -> None:
    init_federation_tls(tmp_path, ["localhost"])
    (tmp_path / "server.key").unlink()

    with pytest.raises(ConfigError, match=r"server\.key does not exist.*fedge certs init"):
        TlsFiles.in_dir(tmp_path)


@pytest.mark.parametrize("host", ["bad host", "-x.example.org", "a..b", "ex_ample.org"])
def test_a_malformed_host_name_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="not a valid DNS name"):
        init_federation_tls(tmp_path, [host])
    assert not list(tmp_path.iterdir())


def test_issue_refuses_a_ca_key_of_another_certificate() -> None:
    key, _ = create_ca()
    _, cert = create_ca()

    with pytest.raises(ConfigError, match="does not belong"):
        issue_server_certificate(key, cert, ["localhost"], [])


def test_node_keypair_is_what_flower_loads(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    private_path, public_path = generate_node_keypair(tmp_path, "hospital-a")

    assert (private_path.name, public_path.name) == ("hospital-a.key", "hospital-a.pub")
    assert _mode(private_path) == 0o600
    # flower-supernode --auth-supernode-private-key reads it with load_ssh_private_key.
    private = serialization.load_ssh_private_key(private_path.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert public_path.read_text().startswith("ecdsa-sha2-nistp384 AAAA")
    flower_bytes = public_key_to_bytes(private.public_key())
    assert load_node_public_key(public_path) == flower_bytes
    assert try_load_public_key(public_path) == flower_bytes


def test_node_keypair_refuses_to_overwrite_and_odd_names(tmp_path: Path) -> None:
    generate_node_keypair(tmp_path, "site")

    with pytest.raises(ConflictError, match=r"site\.key already exists"):
        generate_node_keypair(tmp_path, "site")
    with pytest.raises(ConfigError, match="not a plain file name"):
        generate_node_keypair(tmp_path, "../escape")


def test_a_pem_public_key_loads_to_the_same_bytes_and_fingerprint(tmp_path: Path) -> None:
    _, public_path = generate_node_keypair(tmp_path)
    key = serialization.load_ssh_public_key(public_path.read_bytes())
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    from_ssh, from_pem = load_node_public_key(public_path), load_node_public_key(pem)

    assert from_ssh == from_pem == load_node_public_key(public_path.read_bytes())
    fingerprint = public_key_fingerprint(from_ssh)
    assert len(fingerprint) == 64
    assert fingerprint == public_key_fingerprint(from_pem)
    other = load_node_public_key(generate_node_keypair(tmp_path, "other")[1])
    assert public_key_fingerprint(other) != fingerprint


def test_malformed_node_keys_are_refused_naming_the_file_and_problem(tmp_path: Path) -> None:
    private_path, _ = generate_node_keypair(tmp_path)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("ecdsa-sha2-nistp384 not-base64!!\n")
    edwards = tmp_path / "ed.pub"
    edwards.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    koblitz = ec.generate_private_key(ec.SECP256K1()).public_key()
    non_nist = koblitz.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    with pytest.raises(ConfigError, match=r"node\.key holds a PRIVATE key: send the \.pub file"):
        load_node_public_key(private_path)
    with pytest.raises(ConfigError, match=r"garbage\.pub is not an OpenSSH or PEM public key"):
        load_node_public_key(garbage)
    with pytest.raises(ConfigError, match=r"ed\.pub holds a key of type Ed25519PublicKey, not an EC key"):
        load_node_public_key(edwards)
    with pytest.raises(ConfigError, match="secp256k1, not a NIST curve"):
        load_node_public_key(non_nist)
    with pytest.raises(ConfigError, match=r"missing\.pub does not exist"):
        load_node_public_key(tmp_path / "missing.pub")
