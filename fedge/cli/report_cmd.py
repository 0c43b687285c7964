"""``fedge report RUN --out report.html``: a run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import CaOpt, DatabaseUrlOpt, RootOpt, TokenOpt, opened_registry, operator_api

__all__ = ["report_command"]


@reports_errors
def report_command(
    run_id: Annotated[str, typer.Argument(help="The run's id (`fedge registry runs` lists them)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write")] = Path("report.html"),
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="FEDGE_URL", help="Coordinator URL: fetch the report from its API"),
    ] = None,
    token: TokenOpt = "",
    ca: CaOpt = None,
    override: Annotated[
        list[str] | None,
        typer.Option("--override", help="Hydra override for the gates judged, e.g. registry=regression"),
    ] = None,
) -> None:
    """Write a run's report: config, per-round charts, clients, the version's gates, bundle, drift."""
    if url:
        from urllib.parse import quote

        with operator_api(url, token, ca) as api:
            html = api.request("GET", f"/runs/{quote(run_id, safe='')}/report").text
    else:
        html = _local_report(run_id, root, database_url, override or [])
    out.write_text(html, encoding="utf-8")
    typer.echo(f"report of run {run_id} written to {out} ({len(html.encode())} bytes)")


def _local_report(run_id: str, root: str, database_url: str, override: list[str]) -> str:
    from sqlalchemy import inspect

    from coordinator.drift.store import DriftReportStore
    from coordinator.report import collect_run_report, render_run_report
    from fedge.config import load_config
    from registry import RegistryConfig, open_engine

    gates = load_config([f"registry.root={root}", *override]).registry.gates
    with opened_registry(root, database_url) as registry:
        db_url = RegistryConfig(root=root, database_url=database_url).resolved_database_url()
        engine = open_engine(db_url)
        try:
            # Drift lives in the coordinator's tables: read them where a coordinator made them.
            drift = DriftReportStore(engine) if inspect(engine).has_table("drift_reports") else None
            report = collect_run_report(registry, run_id, gates, drift=drift)
        finally:
            engine.dispose()
    return render_run_report(report)
