"""The import rule of docs/architecture.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"registry", "coordinator", "client", "edge"}
TOP = {"fedge", *SERVICES, "simulations"}

# package -> the first-party packages it may import
ALLOWED: dict[str, set[str]] = {
    "fedge": {"fedge"},
    "registry": {"fedge", "registry"},
    "coordinator": {"fedge", "coordinator", "registry"},
    "client": {"fedge", "client"},
    "edge": {"fedge", "edge"},
    "simulations": {"fedge", "simulations", *SERVICES},
}
# The registry serves no HTTP itself: its routes live in coordinator/api/registry_routes.py.
FORBIDDEN_THIRD_PARTY = {"registry": {"flwr", "fastapi", "starlette"}, "edge": {"torch", "flwr"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    if package == "fedge":  # the CLI sits on top of everything
        files = [f for f in files if "cli" not in f.relative_to(ROOT / "fedge").parts]
    return files


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_design_allows(package: str) -> None:
    violations = []
    for path in _modules(package):
        imported = _imports(path)
        for bad in sorted((imported & TOP) - ALLOWED[package]):
            violations.append(f"{path.relative_to(ROOT)} imports {bad}")
        for bad in sorted(imported & FORBIDDEN_THIRD_PARTY.get(package, set())):
            violations.append(f"{path.relative_to(ROOT)} imports {bad}")
    assert not violations, "\n".join(violations)


def test_coordinator_imports_registry_only_through_its_public_names() -> None:
    violations = []
    for path in _modules("coordinator"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("registry."):
                violations.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
    assert not violations, "\n".join(violations)


def test_importing_the_kernel_registry_and_edge_loads_no_torch() -> None:
    code = (
        "import sys, fedge, fedge.errors, fedge.protocol, fedge.partition, fedge.tasks, registry, edge; "
        "bad = [m for m in ('torch', 'flwr') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"loaded at import: {result.stdout} {result.stderr[-500:]}"


# The kernel holds no servers and no database sessions: those libraries belong to the services.
KERNEL_FORBIDDEN = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "sqlmodel", "alembic"}


def test_the_kernel_imports_no_server_or_database_library() -> None:
    violations = [
        f"{path.relative_to(ROOT)} imports {bad}"
        for path in _modules("fedge")
        for bad in sorted(_imports(path) & KERNEL_FORBIDDEN)
    ]
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("subpackage", ["drift", "deployment"])
def test_coordinator_capabilities_sit_below_its_api(subpackage: str) -> None:
    # coordinator/api is the transport layer: drift and deployment are domain code it calls, never
    # the other way round (a domain module importing a router would tie it to HTTP).
    folder = ROOT / "coordinator" / subpackage
    assert (folder / "__init__.py").is_file(), f"coordinator/{subpackage}/ is a package"
    violations = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("coordinator.api"):
                violations.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
    assert not violations, "\n".join(violations)
