"""What a new operator hits first: the federation CA on every HTTPS command, the artifact a download
writes, a missing data file, the CA key in a git work tree, example data in the task's format.

The operator API is the real app under uvicorn over TLS on 127.0.0.1, with certificates from
``fedge certs init``; the registry is a real SQLite one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from client.data_files import load_client_data
from coordinator.api import CoordinatorSettings
from fedge.cli.main import app as cli
from fedge.cli.registry_cmd import download_kind
from fedge.config import load_config
from fedge.errors import ConfigError
from fedge.processes import free_port
from fedge.tls import init_federation_tls
from registry import ModelVersionCreate, Registry, RegistryConfig, RunCreate
from tests.apps import operator_app

ONNX_BYTES = b"not really onnx, but the bytes the registry holds"


@dataclass
class TlsCoordinator:
    url: str
    ca: Path
    tokens: dict[str, str]
    registry: Registry


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCoordinator]:
    root = tmp_path_factory.mktemp("tls-coordinator")
    tls = init_federation_tls(root / "tls", ["localhost"])
    api, tokens = operator_app(CoordinatorSettings(registry=RegistryConfig(root=str(root / "reg"))))
    registry: Registry = api.state.registry
    registry.store.create_run(
        RunCreate(run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64)
    )
    registry.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r",
            checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", ONNX_BYTES),),
            metrics={"central-accuracy": 0.95, "onnx-parity-max-abs-diff": 1e-6},
            lineage={},
            model_config={},
        ),
        aliases=("candidate",),
    )
    port = free_port()
    config = uvicorn.Config(
        api,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        ssl_certfile=str(tls.server_cert),
        ssl_keyfile=str(tls.server_key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-tls-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield TlsCoordinator(f"https://127.0.0.1:{port}", tls.ca_cert, tokens, registry)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def fedge(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process with no FEDGE_* variables but those given."""
    clean: dict[str, str | None] = {"FEDGE_URL": None, "FEDGE_TOKEN": None, "FEDGE_CA": None}
    result = CliRunner().invoke(cli, list(args), env={**clean, **(env or {})})  # type: ignore[arg-type]
    return result.exit_code, result.stdout, result.stderr


# --- a: the federation CA on every HTTPS command ---------------------------------------------------
def test_registry_promote_over_https_trusts_the_federation_ca(coordinator: TlsCoordinator) -> None:
    code, out, err = fedge(
        "registry", "promote", "digits:1=staging", "--reason", "tls", "--url", coordinator.url,
        "--token", coordinator.tokens["operator"], "--ca", str(coordinator.ca),
    )  # fmt: skip

    assert code == 0, err
    assert "digits:1 (id 1) now holds" in out and "staging" in out


def test_without_the_ca_the_error_says_to_pass_it(coordinator: TlsCoordinator) -> None:
    code, out, err = fedge(
        "registry", "promote", "digits:1=staging", "--reason", "tls", "--url", coordinator.url,
        "--token", coordinator.tokens["operator"],
    )  # fmt: skip

    assert code == 3 and out == ""
    assert "does not trust" in err and "--ca" in err and "FEDGE_CA" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_approve_reads_the_ca_from_fedge_ca(coordinator: TlsCoordinator) -> None:
    code, out, err = fedge(
        "registry", "approve", "digits:1", "--alias", "production", "--url", coordinator.url,
        env={"FEDGE_TOKEN": coordinator.tokens["operator"], "FEDGE_CA": str(coordinator.ca)},
    )  # fmt: skip

    assert code == 0, err
    assert "approved digits:1 for production" in out


def test_runs_and_nodes_use_the_same_ca_option(coordinator: TlsCoordinator) -> None:
    trusted = fedge("runs", "list", "--url", coordinator.url, "--token", coordinator.tokens["viewer"],
                    "--ca", str(coordinator.ca))  # fmt: skip
    untrusted = fedge("runs", "list", "--url", coordinator.url, "--token", coordinator.tokens["viewer"])

    assert trusted[0] == 0, trusted[2]
    assert untrusted[0] == 1 and "--ca" in untrusted[2] and "Traceback" not in untrusted[2]


def test_a_ca_option_naming_no_file_is_a_config_error(coordinator: TlsCoordinator, tmp_path: Path) -> None:
    code, _, err = fedge(
        "registry", "promote", "digits:1=staging", "--reason", "tls", "--url", coordinator.url,
        "--token", coordinator.tokens["operator"], "--ca", str(tmp_path / "missing.crt"),
    )  # fmt: skip

    assert code == 2
    assert "missing.crt" in err and "not a file" in err


def test_a_ca_file_that_is_not_a_certificate_is_a_config_error(
    coordinator: TlsCoordinator, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.crt"
    bogus.write_text("not a certificate\n")

    code, _, err = fedge("runs", "list", "--url", coordinator.url, "--token", coordinator.tokens["viewer"],
                         "--ca", str(bogus))  # fmt: skip

    assert code == 2
    assert "cannot be used" in err and "Traceback" not in err


# --- h: the artifact follows the file's suffix -----------------------------------------------------
def test_download_to_an_onnx_file_over_https_writes_the_onnx_model(
    coordinator: TlsCoordinator, tmp_path: Path
) -> None:
    out = tmp_path / "model.onnx"

    code, stdout, err = fedge(
        "registry", "download", "digits@candidate", "--out", str(out), "--url", coordinator.url,
        "--token", coordinator.tokens["viewer"], "--ca", str(coordinator.ca),
    )  # fmt: skip

    assert code == 0, err
    assert out.read_bytes() == ONNX_BYTES
    assert stdout.startswith("wrote onnx of digits@candidate")


def test_download_refuses_a_kind_that_contradicts_the_suffix(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"

    code, _, err = fedge("registry", "download", "digits@candidate", "--out", str(out), "--kind", "bundle",
                         "--root", str(tmp_path / "none"))  # fmt: skip

    assert code == 2 and not out.exists()
    assert "--kind bundle is written as .zip" in err and "model.onnx" in err


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("m.onnx", None, "onnx"),
        ("m.ONNX", None, "onnx"),
        ("m.onnx", "onnx-int8", "onnx-int8"),
        ("release.zip", None, "bundle"),
        ("w.safetensors", None, "weights"),
        ("manifest.json", None, "manifest"),
        ("anything.bin", "weights", "weights"),
    ],
)
def test_download_kind_follows_the_suffix(name: str, kind: str | None, expected: str) -> None:
    assert download_kind(Path(name), kind) == expected


@pytest.mark.parametrize(("name", "kind", "message"), [
    ("model.bin", None, "cannot tell the artifact"),
    ("model.zip", "onnx", "--kind onnx is written as .onnx"),
    ("model.zip", "pickle", "--kind 'pickle' is not one of"),
])  # fmt: skip
def test_download_kind_refusals(name: str, kind: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        download_kind(Path(name), kind)


# --- g: a missing data file --------------------------------------------------------------------------
def test_client_start_with_a_missing_data_file_is_one_line_exit_2(tmp_path: Path) -> None:
    tls = init_federation_tls(tmp_path / "tls", ["localhost"])
    assert fedge("client", "keygen", "--out", str(tmp_path / "keys"), "--name", "a")[0] == 0

    code, out, err = fedge(
        "client", "start", "--coordinator", "127.0.0.1:9", "--ca", str(tls.ca_cert),
        "--key", str(tmp_path / "keys" / "a.key"), "--data", str(tmp_path / "nope.csv"),
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip

    assert code == 2 and out == ""
    assert err.startswith("error [data_invalid]: data file") and "nope.csv does not exist" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "state" / "supernode.log").exists(), "nothing was started"


# --- j: the CA key in a git work tree ----------------------------------------------------------------
def test_certs_init_warns_when_the_ca_key_lands_in_a_git_work_tree(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    outside = fedge("certs", "init", "--out", str(tmp_path / "safe"), "--host", "localhost")
    inside = fedge("certs", "init", "--out", str(tmp_path / "repo" / "deploy" / "tls"), "--host", "localhost")

    assert outside[0] == 0 and "warning" not in outside[2]
    assert inside[0] == 0 and (tmp_path / "repo" / "deploy" / "tls" / "ca.key").exists()
    assert "warning:" in inside[2] and "inside the git work tree" in inside[2]
    assert str(tmp_path / "repo") in inside[2] and "never commit it" in inside[2]


# --- k: example data in the task's format --------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "suffix"), [("digits", ".csv"), ("diabetes", ".parquet"), ("shapes", ".npz")]
)
def test_example_data_is_a_valid_client_file_for_the_task(tmp_path: Path, task: str, suffix: str) -> None:
    out = tmp_path / f"site{suffix}"

    code, stdout, err = fedge("client", "example-data", "--task", task, "--out", str(out))

    assert code == 0, err
    cfg = load_config([f"task={task}"]).task
    data = load_client_data(out, cfg, val_fraction=cfg.val_fraction, seed=cfg.data_seed)
    assert data.num_rows > 0 and f"wrote {out}: {data.num_rows} rows for task {task}" in stdout
    if suffix == ".csv":
        header = out.read_text().splitlines()[0].split(",")
        assert header[0] == "pixel_0_0" and header[-1] == "label" and len(header) == 65


def test_example_data_refuses_to_overwrite_and_a_table_for_a_tensor_task(tmp_path: Path) -> None:
    out = tmp_path / "site.csv"
    out.write_text("mine\n")

    exists = fedge("client", "example-data", "--task", "digits", "--out", str(out))
    tensor = fedge("client", "example-data", "--task", "shapes", "--out", str(tmp_path / "s.csv"))

    assert exists[0] == 1 and "already exists" in exists[2] and out.read_text() == "mine\n"
    assert tensor[0] == 2 and "NPZ" in tensor[2]


# --- a: `fedge edge run` trusts the federation CA too ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("trusted", [True, False])
def test_edge_run_reaches_the_coordinator_over_https_with_the_ca(
    coordinator: TlsCoordinator, tmp_path: Path, trusted: bool
) -> None:
    import os
    import subprocess
    import sys

    from fedge.crypto import generate_private_key, save_public_key

    public_key = save_public_key(generate_private_key().public_key(), tmp_path / "signing.pub.pem")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGE_")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[2]), FEDGE_TOKEN=coordinator.tokens["viewer"])
    if trusted:
        env["FEDGE_CA"] = str(coordinator.ca)

    # The registry's candidate is not a signed release: the first start fails either way, and the
    # reason tells whether the device got past TLS.
    edge = subprocess.run(
        [
            sys.executable, "-m", "fedge.cli.main", "edge", "run", "--registry", coordinator.url,
            "--public-key", str(public_key), "--dir", str(tmp_path / "edge"), "--port", str(free_port()),
            "--alias", "candidate", "--drift-epsilon", "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip

    assert edge.returncode != 0 and "Traceback" not in edge.stderr
    if trusted:
        assert "does not trust" not in edge.stderr and "CERTIFICATE_VERIFY_FAILED" not in edge.stderr
        assert "digits" in edge.stderr and "cannot reach" not in edge.stderr, edge.stderr
    else:
        assert "presents a TLS certificate this client does not trust" in edge.stderr
        assert "--ca" in edge.stderr and "FEDGE_CA" in edge.stderr
