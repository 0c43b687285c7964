"""What each install brings: an edge device gets serving only; the server extra brings training."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
HEAVY = {"torch", "flwr", "scikit-learn", "sqlmodel", "hydra-core", "onnx", "onnxscript", "alembic"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_an_edge_install_brings_no_training_stack() -> None:
    project = PYPROJECT["project"]
    edge = _names(project["dependencies"]) | _names(project["optional-dependencies"]["edge"])

    assert not edge & HEAVY, edge & HEAVY
    assert {
        "onnxruntime",
        "numpy",
        "httpx",
        "cryptography",
        "fastapi",
        "uvicorn",
        "prometheus-client",
    } <= edge


def test_the_server_extra_pins_flower_142_and_a_cpu_torch_range() -> None:
    server = PYPROJECT["project"]["optional-dependencies"]["server"]

    assert "flwr[simulation,dp]>=1.42,<1.43" in server  # dp: dp-accounting for the RDP accountant
    assert "torch>=2.4,<2.14" in server
    assert "fedge[server]" in PYPROJECT["project"]["optional-dependencies"]["dev"]
