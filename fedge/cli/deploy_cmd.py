"""``fedge certs init`` and ``fedge client keygen``: the TLS and node keys of a deployed federation.

The operator makes the federation's CA and SuperLink certificate; each institution makes its node key
pair and sends only the public half to the operator. Both need only the kernel (no torch, no flwr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors

__all__ = ["certs_app", "client_app"]

certs_app = typer.Typer(help="The federation's TLS certificates (a private CA).", no_args_is_help=True)
client_app = typer.Typer(help="Run a client agent at an institution.", no_args_is_help=True)


@certs_app.command("init")
@reports_errors
def certs_init(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for ca.crt, ca.key, server.crt, server.key")
    ],
    host: Annotated[
        list[str],
        typer.Option("--host", help="A DNS name or IP address nodes dial (repeatable)"),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing files (nodes must get the new CA)")
    ] = False,
) -> None:
    """Create a CA and a SuperLink certificate for the hosts (localhost and loopback always included)."""
    from cryptography import x509

    from fedge.tls import init_federation_tls

    files = init_federation_tls(out, host, overwrite=force)
    san = x509.load_pem_x509_certificate(files.server_cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    names = [
        *san.value.get_values_for_type(x509.DNSName),
        *map(str, san.value.get_values_for_type(x509.IPAddress)),
    ]
    typer.echo(f"wrote {files.ca_cert} (give it to every institution: their trust root)")
    typer.echo(f"wrote {out / 'ca.key'} (0600; keep it offline: it can mint server certificates)")
    typer.echo(f"wrote {files.server_cert} and {files.server_key} (0600): the SuperLink's TLS identity")
    typer.echo(f"server certificate names: {', '.join(names)}")


@client_app.command("keygen")
@reports_errors
def client_keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for NAME.key and NAME.pub")],
    name: Annotated[str, typer.Option("--name", help="This node's name (file names and enrolment)")] = "node",
) -> None:
    """Create this node's key pair for Flower node authentication (EC P-384, OpenSSH format)."""
    from fedge.tls import generate_node_keypair, load_node_public_key, public_key_fingerprint

    private_path, public_path = generate_node_keypair(out, name)
    fingerprint = public_key_fingerprint(load_node_public_key(public_path))
    typer.echo(f"private key: {private_path} (0600; it never leaves this machine)")
    typer.echo(f"public key:  {public_path}")
    typer.echo(f"fingerprint: sha256:{fingerprint}")
    typer.echo(
        f"send {public_path.name} to the federation operator, who enrols it with "
        f"`fedge nodes add --name {name} {public_path.name}`; confirm the fingerprint with them by "
        "another channel"
    )
