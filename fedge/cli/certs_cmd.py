"""``fedge certs init``: the federation's private CA and the SuperLink's TLS certificate (kernel only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors

__all__ = ["certs_app", "git_work_tree"]

certs_app = typer.Typer(help="The federation's TLS certificates (a private CA).", no_args_is_help=True)


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
    repo = git_work_tree(out)
    if repo is not None:
        typer.secho(
            f"warning: {out / 'ca.key'} is inside the git work tree {repo}: never commit it (anyone "
            "holding it can impersonate the SuperLink); move ca.key out of the repository, e.g. to "
            "~/.fedge/ca/ or offline storage, and keep only ca.crt, server.crt and server.key on the "
            "coordinator (see the README, 'Deploy a federation')",
            fg=typer.colors.YELLOW,
            err=True,
        )
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


def git_work_tree(path: Path) -> Path | None:
    """The top folder of the git work tree holding ``path`` (a ``.git`` folder or file above it), if any."""
    folder = path.expanduser().resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None
