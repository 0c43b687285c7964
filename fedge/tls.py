"""TLS material of a federation (a private CA and the SuperLink's certificate) and node key pairs.

An operator runs :func:`init_federation_tls` once: it writes a CA (``ca.crt``, ``ca.key``) and a server
certificate for the SuperLink (``server.crt``, ``server.key``) signed by it. Institutions receive only
``ca.crt``, their trust root. Each institution makes its node key pair with :func:`generate_node_keypair`
and sends the public half to the operator, who enrols it; Flower 1.42 then admits only enrolled nodes
(``--enable-supernode-auth``).

Formats are the ones Flower 1.42 reads: ``flower-supernode --auth-supernode-private-key`` loads the node's
private key with ``cryptography``'s ``load_ssh_private_key`` (OpenSSH private format, an EC key), and
``flwr supernode register KEY.pub`` loads an OpenSSH public key on a NIST curve and sends its PEM
SubjectPublicKeyInfo bytes (:func:`load_node_public_key` returns exactly those bytes).

Every private key is created with mode 0600 and no file is overwritten unless asked for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedge.crypto import read_key_file, write_new_file
from fedge.errors import ConfigError, ConflictError
from fedge.private_fs import private_dir

__all__ = [
    "NIST_CURVES",
    "TlsFiles",
    "create_ca",
    "generate_node_keypair",
    "init_federation_tls",
    "issue_server_certificate",
    "load_node_public_key",
    "public_key_fingerprint",
]

# The curves Flower accepts for node keys (flwr.supercore.primitives.asymmetric.uses_nist_ec_curve).
NIST_CURVES = (ec.SECP192R1, ec.SECP224R1, ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
# Always in the server certificate, so a SuperLink is reachable on its own machine as well.
LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1", "::1")

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Certificates start a little in the past: a node whose clock runs slightly behind still accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)
_T = TypeVar("_T")


@dataclass(frozen=True)
class TlsFiles:
    """Where a federation's TLS files are: what the SuperLink serves with and what nodes trust.

    Attributes
    ----------
    ca_cert : Path
        The CA certificate (``ca.crt``): the trust root every node and operator client gets.
    server_cert, server_key : Path
        The SuperLink's certificate and private key (``server.crt``, ``server.key``).
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_dir(cls, path: str | os.PathLike[str]) -> TlsFiles:
        """Return the files :func:`init_federation_tls` wrote to ``path``.

        Raises
        ------
        ConfigError
            If one of them is missing; the message names it and how to create the set.
        """
        folder = Path(path)
        files = cls(folder / "ca.crt", folder / "server.crt", folder / "server.key")
        for file in (files.ca_cert, files.server_cert, files.server_key):
            if not file.is_file():
                raise ConfigError(
                    f"TLS file {file} does not exist; create the federation's certificates with "
                    f"`fedge certs init --out {folder} --host HOSTNAME`"
                )
        return files


def create_ca(
    common_name: str = "fedge federation CA", days: int = 3650
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Return a new P-384 private key and a self-signed CA certificate for it.

    The CA may sign end-entity certificates only (``path_length=0``), and nothing but
    certificates and CRLs (its key usage).
    """
    _check_days(days)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedge"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage("key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hostnames: list[str],
    ip_addresses: list[str],
    days: int = 825,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Return a new P-384 key and a TLS server certificate for it, signed by the CA.

    Parameters
    ----------
    ca_key, ca_cert : EllipticCurvePrivateKey, Certificate
        The CA from :func:`create_ca`; the key must be the certificate's.
    hostnames : list of str
        DNS names clients dial; ``localhost`` is always added.
    ip_addresses : list of str
        IP addresses clients dial; ``127.0.0.1`` and ``::1`` are always added.
    days : int
        Validity; 825 days is the longest that common TLS clients accept for a server certificate.

    Raises
    ------
    ConfigError
        For a malformed host name or address, or a CA key that does not belong to the certificate.
    """
    _check_days(days)
    if ca_key.public_key() != ca_cert.public_key():
        raise ConfigError("the CA private key does not belong to the CA certificate; pass the matching pair")
    dns = _unique([*(_check_dns_name(h) for h in hostnames), *LOCAL_NAMES])
    ips = _unique(
        [*(_check_ip(a) for a in ip_addresses), *(ipaddress.ip_address(a) for a in LOCAL_ADDRESSES)]
    )
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(
            x509.SubjectAlternativeName([*(x509.DNSName(d) for d in dns), *(x509.IPAddress(i) for i in ips)]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage("digital_signature"),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def init_federation_tls(
    out_dir: str | os.PathLike[str], hostnames: list[str], *, overwrite: bool = False
) -> TlsFiles:
    """Write a new CA and a SuperLink certificate for ``hostnames`` to ``out_dir``.

    ``hostnames`` may mix DNS names and IP addresses; each goes to the matching SAN kind.
    Writes ``ca.crt``, ``ca.key`` (0600), ``server.crt`` and ``server.key`` (0600), all PEM.

    Raises
    ------
    ConflictError
        If any of the four files exists and ``overwrite`` is false; nothing is written then.
    ConfigError
        For a malformed host name, or a folder that cannot be written.
    """
    folder = Path(out_dir)
    names: list[str] = []
    addresses: list[str] = []
    for host in hostnames:
        (addresses if _is_ip(host) else names).append(host)
    ca_key, ca_cert = create_ca()
    server_key, server_cert = issue_server_certificate(ca_key, ca_cert, names, addresses)
    outputs = {
        folder / "ca.crt": (ca_cert.public_bytes(serialization.Encoding.PEM), 0o644, "CA certificate"),
        folder / "ca.key": (_private_pem(ca_key), 0o600, "CA private key"),
        folder / "server.crt": (server_cert.public_bytes(serialization.Encoding.PEM), 0o644, "certificate"),
        folder / "server.key": (_private_pem(server_key), 0o600, "server private key"),
    }
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not overwrite:
        raise ConflictError(
            f"TLS files already exist: {', '.join(existing)}; refusing to overwrite them (nodes trust "
            "the current CA): pass --force to replace them, or choose another folder"
        )
    try:
        private_dir(folder)
    except OSError as exc:
        raise ConfigError(f"cannot create folder {folder}: {exc.strerror}") from exc
    for path, (data, mode, what) in outputs.items():
        if overwrite:
            path.unlink(missing_ok=True)
        write_new_file(path, data, mode=mode, what=what)
    return TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")


def generate_node_keypair(out_dir: str | os.PathLike[str], name: str = "node") -> tuple[Path, Path]:
    """Write a new node key pair for Flower's node authentication: ``NAME.key`` and ``NAME.pub``.

    The private key (0600) is an EC P-384 key in OpenSSH private format, what
    ``flower-supernode --auth-supernode-private-key`` loads; it stays at the institution. The public
    key is one OpenSSH line (``ecdsa-sha2-nistp384 AAAA... fedge-node:NAME``), what the operator enrols.

    Returns
    -------
    tuple of Path
        The private and the public key file.

    Raises
    ------
    ConflictError
        If either file exists (a node key is never replaced silently).
    ConfigError
        For a name that is not a plain file name, or a folder that cannot be written.
    """
    if not _FILE_NAME.match(name):
        raise ConfigError(
            f"node name {name!r} is not a plain file name: use letters, digits, '.', '_' and '-' "
            "(at most 64), starting with a letter or digit"
        )
    folder = Path(out_dir)
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise ConflictError(
                f"node key file {path} already exists; refusing to overwrite it: choose another --name "
                "or folder, or remove the old key deliberately (the operator must then enrol the new one)"
            )
    try:
        private_dir(folder)
    except OSError as exc:
        raise ConfigError(f"cannot create folder {folder}: {exc.strerror}") from exc
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    write_new_file(private_path, private, mode=0o600, what="node private key")
    write_new_file(public_path, public + f" fedge-node:{name}\n".encode(), mode=0o644, what="node public key")
    return private_path, public_path


def load_node_public_key(source: str | os.PathLike[str] | bytes) -> bytes:
    """Validate a node's public key and return the bytes Flower enrols (PEM SubjectPublicKeyInfo).

    Parameters
    ----------
    source : path-like or bytes
        A file (or its content) holding one EC public key on a NIST curve, as an OpenSSH line
        (``ecdsa-sha2-nistp384 AAAA...``, what :func:`generate_node_keypair` writes) or PEM.

    Returns
    -------
    bytes
        What ``flwr supernode register`` sends in ``RegisterNodeRequest.public_key``.

    Raises
    ------
    ConfigError
        If the file is missing, is a private key, is not a public key, or is not EC on a NIST curve;
        the message names the file.
    """
    if isinstance(source, bytes):
        data, label = source, "the public key"
    else:
        path = Path(source)
        label = f"public key file {path}"
        data = read_key_file(path, "public key")
    text = data.strip()
    if b"PRIVATE KEY" in text[:64]:
        raise ConfigError(
            f"{label} holds a PRIVATE key: send the .pub file instead, and keep the private key at the "
            "institution (treat it as exposed if it was shared)"
        )
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = serialization.load_ssh_public_key(text)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{label} is not an OpenSSH or PEM public key ({exc}); pass the NAME.pub file written by "
            "`fedge client keygen`"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(
            f"{label} holds a key of type {type(key).__name__}, not an EC key; Flower node "
            "authentication takes EC keys on a NIST curve: make one with `fedge client keygen`"
        )
    if not isinstance(key.curve, NIST_CURVES):
        raise ConfigError(
            f"{label} is on curve {key.curve.name}, not a NIST curve (P-256, P-384, P-521...); make a "
            "P-384 key with `fedge client keygen`"
        )
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_fingerprint(public_key: bytes) -> str:
    """Return the sha256 (hex) of a node public key's DER SubjectPublicKeyInfo.

    ``public_key`` is what :func:`load_node_public_key` returns; the DER form makes the fingerprint
    independent of how the PEM was wrapped, so an operator and an institution compare the same value.

    Raises
    ------
    ConfigError
        If ``public_key`` is not a PEM public key.
    """
    try:
        key = serialization.load_pem_public_key(public_key)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"not a PEM public key ({exc}); pass the bytes load_node_public_key returns"
        ) from exc
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _key_usage(*allowed: str) -> x509.KeyUsage:
    # Every flag named: KeyUsage takes all nine, and a certificate should allow only what it needs.
    flags = [
        *("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"),
        *("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
    ]
    return x509.KeyUsage(**{flag: flag in allowed for flag in flags})


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _check_days(days: int) -> None:
    if days < 1:
        raise ConfigError(f"certificate validity must be at least 1 day, got {days}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _check_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise ConfigError(f"{address!r} is not an IP address") from None


def _check_dns_name(name: str) -> str:
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise ConfigError(
            f"host name {name!r} is not a valid DNS name: use the name clients dial, such as "
            "flower.example.org (letters, digits, '-' and '.'), or an IP address"
        )
    return name.lower()


def _unique(items: list[_T]) -> list[_T]:
    return list(dict.fromkeys(items))
