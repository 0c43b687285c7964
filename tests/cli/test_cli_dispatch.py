"""``fedge NAME ...`` builds only NAME; ``fedge --help`` and the importable ``app`` hold every subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from fedge.cli.main import SUBCOMMANDS, build_app


def _names(cli: typer.Typer) -> set[str]:
    group = typer.main.get_command(cli)
    return set(group.commands)  # type: ignore[attr-defined]


def test_full_app_has_every_subcommand() -> None:
    from fedge.cli.main import app

    assert _names(app) == set(SUBCOMMANDS)
    assert {"edge", "simulate", "registry", "runs", "report"} <= set(SUBCOMMANDS)


def test_one_subcommand_stays_a_group() -> None:
    assert _names(build_app("edge")) == {"edge"}
    assert _names(build_app("report")) == {"report"}
    with pytest.raises(KeyError, match="no fedge subcommand 'nope'"):
        build_app("nope")


def test_edge_command_imports_no_other_subcommand() -> None:
    # What `fedge edge run` pays at start: its own command module only, no torch, flwr or FastAPI.
    probe = (
        "import sys\n"
        "sys.argv = ['fedge', 'edge', 'status', '--help']\n"
        "from fedge.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('fedge.cli.') and m.endswith('_cmd'))\n"
        "heavy = sorted(m for m in ('torch', 'flwr', 'fastapi') if m in sys.modules)\n"
        "print('LOADED', ','.join(loaded), 'HEAVY', ','.join(heavy) or '-')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOADED"))
    assert line == "LOADED fedge.cli.edge_cmd HEAVY -", line
    assert "Usage:" in out.stdout


def test_unknown_subcommand_is_named() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "bogus"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "No such command 'bogus'" in out.stderr
