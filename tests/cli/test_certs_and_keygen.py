"""``fedge certs init`` and ``fedge client keygen`` through their Typer apps."""

from __future__ import annotations

import stat
from pathlib import Path

import typer
from cryptography import x509
from typer.testing import CliRunner

from fedge.cli.certs_cmd import certs_app
from fedge.cli.client_cmd import client_app
from fedge.tls import load_node_public_key, public_key_fingerprint

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
# Wired as fedge.cli.main wires them: a one-command Typer alone would take no command name.
app = typer.Typer()
app.add_typer(certs_app, name="certs")
app.add_typer(client_app, name="client")


def test_certs_init_writes_the_files_and_prints_the_names(tmp_path: Path) -> None:
    out = tmp_path / "tls"

    result = runner.invoke(
        app, ["certs", "init", "--out", str(out), "--host", "flower.example.org", "--host", "10.1.2.3"]
    )

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]
    assert (
        "server certificate names: flower.example.org, localhost, 10.1.2.3, 127.0.0.1, ::1" in result.stdout
    )
    assert f"wrote {out / 'ca.crt'}" in result.stdout
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate((out / "ca.crt").read_bytes()))


def test_certs_init_refuses_existing_files_without_force(tmp_path: Path) -> None:
    args = ["certs", "init", "--out", str(tmp_path), "--host", "localhost"]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "ca.crt").read_bytes()

    refused = runner.invoke(app, args)
    forced = runner.invoke(app, [*args, "--force"])

    assert refused.exit_code == 1
    assert refused.stderr.startswith("error [conflict]: TLS files already exist:")
    assert "--force" in refused.stderr
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "ca.crt").read_bytes() != before


def test_certs_init_names_a_bad_host(tmp_path: Path) -> None:
    result = runner.invoke(app, ["certs", "init", "--out", str(tmp_path), "--host", "not a host"])

    assert result.exit_code == 2
    assert "error [config_invalid]: host name 'not a host' is not a valid DNS name" in result.stderr


def test_client_keygen_prints_paths_fingerprint_and_what_to_send(tmp_path: Path) -> None:
    result = runner.invoke(app, ["client", "keygen", "--out", str(tmp_path), "--name", "hospital-a"])

    assert result.exit_code == 0, result.output
    private_path, public_path = tmp_path / "hospital-a.key", tmp_path / "hospital-a.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    fingerprint = public_key_fingerprint(load_node_public_key(public_path))
    assert f"fingerprint: sha256:{fingerprint}" in result.stdout
    assert str(private_path) in result.stdout and str(public_path) in result.stdout
    assert "fedge nodes add --name hospital-a hospital-a.pub" in result.stdout


def test_client_keygen_refuses_to_replace_a_key(tmp_path: Path) -> None:
    assert runner.invoke(app, ["client", "keygen", "--out", str(tmp_path)]).exit_code == 0

    again = runner.invoke(app, ["client", "keygen", "--out", str(tmp_path)])

    assert again.exit_code == 1
    assert again.stderr.startswith(f"error [conflict]: node key file {tmp_path / 'node.key'} already exists")
