"""A run's report: one self-contained HTML page (inline CSS, server-rendered SVG charts, no script).

:func:`collect_run_report` reads what the registry (and, when given, the drift store) holds about a
run; :func:`render_run_report` turns it into HTML. Every value that came from a user or a config
(run ids, reasons, config values, metric names, node names) is HTML-escaped; the page loads nothing
from anywhere, so it can be mailed, archived or opened offline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any, Protocol

from fedge.config import GatesConfig
from fedge.version import fedge_version
from registry import (
    Approval,
    Checkpoint,
    GateCheck,
    ModelVersion,
    Registry,
    RunInfo,
    check_gates,
)

__all__ = ["DriftSource", "RunReport", "VersionReport", "collect_run_report", "render_run_report"]

# The per-round series each chart draws, in this order (those the run did not record are left out).
ACCURACY_SERIES = ("central-accuracy", "eval-accuracy", "train-accuracy")
LOSS_SERIES = ("central-loss", "eval-loss", "train-loss")
_COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#8250df")
_DRIFT_WINDOWS = 50


class DriftSource(Protocol):
    """What the report reads of drift (``coordinator.drift.store.DriftReportStore`` has both)."""

    def reports(self, model: str | None = None, *, version: int | None = None, limit: int = 100) -> list[Any]:
        """Drift windows of one model version."""
        ...

    def triggers(self, model: str | None = None, *, limit: int = 50) -> list[Any]:
        """Policy decisions that fired for one model."""
        ...


@dataclass(frozen=True)
class VersionReport:
    """A version the run produced: its gates per alias, approvals, bundle and drift."""

    version: ModelVersion
    gates: dict[str, list[GateCheck]]
    approvals: list[Approval]
    signer: dict[str, Any]
    drift_windows: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class RunReport:
    """Everything the report shows about one run."""

    run: RunInfo
    checkpoints: list[Checkpoint]
    versions: list[VersionReport]
    drift_triggers: list[Any]
    generated_at: datetime


def collect_run_report(
    registry: Registry, run_id: str, gates: GatesConfig, *, drift: DriftSource | None = None
) -> RunReport:
    """Read the run, its rounds, the versions it produced (gated by ``gates``) and their drift.

    Raises
    ------
    NotFoundError
        If no run has id ``run_id``.
    """
    run = registry.store.get_run(run_id)
    checkpoints = registry.store.list_checkpoints(run_id)
    versions = []
    for version in registry.store.list_versions(run_id=run_id):
        approvals = registry.store.list_approvals(version.id)
        checks = {
            alias: check_gates(version, gate, [a for a in approvals if a.alias == alias])
            for alias, gate in sorted(gates.aliases.items())
        }
        windows = drift.reports(version.name, version=version.number, limit=_DRIFT_WINDOWS) if drift else []
        versions.append(VersionReport(version, checks, approvals, _signer(registry, version), windows))
    triggers: list[Any] = []
    if drift is not None:
        names = {v.version.name for v in versions} | {run.task}
        for name in sorted(names):
            triggers += [
                t
                for t in drift.triggers(name, limit=200)
                if t.run_id == run_id or any(t.version == v.version.number for v in versions)
            ]
    return RunReport(run, checkpoints, versions, triggers, datetime.now(UTC))


def _signer(registry: Registry, version: ModelVersion) -> dict[str, Any]:
    """The release manifest's signer and identity (empty when the version has no signed manifest)."""
    if version.artifact("manifest") is None:
        return {}
    try:
        manifest = json.loads(registry.read_artifact(version, "manifest"))
    except (ValueError, OSError):
        return {"error": "the manifest could not be read"}
    return {
        "signer": manifest.get("signer", {}),
        "identity": manifest.get("identity", {}),
        "signed": version.artifact("manifest-sig") is not None,
    }


# --- rendering ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#1f2328;margin:2rem auto;
max-width:1100px;padding:0 1rem}h1{font-size:1.5rem;margin-bottom:.2rem}
h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
h3{font-size:1rem}.muted{color:#59636e}table{border-collapse:collapse;margin:.5rem 0;width:100%}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px;word-break:break-all}
.pass{color:#1a7f37;font-weight:600}.fail{color:#d1242f;font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:1rem}
svg{background:#fff;border:1px solid #d0d7de}details{margin:.5rem 0}
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value if value is not None else "-")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return _e(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows)
    attr = f' class="{_e(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: Any, *, num: bool = False, raw: bool = False) -> str:
    text = value if raw else (_num(value) if num else _e(value))
    return f'<td class="num">{text}</td>' if num else f"<td>{text}</td>"


def _flatten(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key in sorted(config, key=str):
        value, path = config[key], f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items += _flatten(value, f"{path}.")
        else:
            items.append((path, json.dumps(value, default=str) if not isinstance(value, str) else value))
    return items


def _chart(title: str, checkpoints: Sequence[Checkpoint], series: Sequence[str]) -> str:
    """An SVG line chart of ``series`` over the rounds (one circle per recorded point)."""
    lines = [
        (name, [(c.round, float(c.metrics[name])) for c in checkpoints if _finite(c.metrics.get(name))])
        for name in series
    ]
    lines = [(name, pts) for name, pts in lines if pts]
    width, height, left, right, top, bottom = 480, 260, 56, 16, 28, 44
    if not lines:
        return (
            f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="80" viewBox="0 0 {width} 80">'
            f'<text x="12" y="44">{_e(title)}: not recorded</text></svg>'
        )
    rounds = [r for _, pts in lines for r, _ in pts]
    values = [v for _, pts in lines for _, v in pts]
    r0, r1 = min(rounds), max(rounds)
    v0, v1 = min(values), max(values)
    if v1 - v0 < 1e-12:
        v0, v1 = v0 - 0.5, v1 + 0.5
    pad = (v1 - v0) * 0.08
    v0, v1 = v0 - pad, v1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(r: float) -> float:
        return left + (plot_w / 2 if r1 == r0 else (r - r0) / (r1 - r0) * plot_w)

    def y(v: float) -> float:
        return top + (1 - (v - v0) / (v1 - v0)) * plot_h

    parts = [
        f'<svg role="img" aria-label="{_e(title)}" data-chart="{_e(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="18" font-weight="600">{_e(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#59636e"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#59636e"/>',
    ]
    for i in range(5):
        v = v0 + (v1 - v0) * i / 4
        parts.append(
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{_num(v, 3)}</text>'
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" stroke="#eaeef2"/>'
        )
    ticks = sorted(set(rounds))
    step = max(1, math.ceil(len(ticks) / 10))
    for r in ticks[::step]:
        parts.append(
            f'<text x="{x(r):.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">{r}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" font-size="11">round</text>'
    )
    for i, (name, pts) in enumerate(lines):
        colour = _COLOURS[i % len(_COLOURS)]
        path = " ".join(f"{x(r):.1f},{y(v):.1f}" for r, v in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for r, v in pts:
            parts.append(
                f'<circle class="point" data-series="{_e(name)}" data-round="{r}" cx="{x(r):.1f}" '
                f'cy="{y(v):.1f}" r="3.5" fill="{colour}">'
                f"<title>{_e(name)} round {r}: {_num(v)}</title></circle>"
            )
        lx = left + 8 + i * 150
        parts.append(
            f'<rect x="{lx}" y="{top + 4}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{top + 13}" font-size="11">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _clients(checkpoints: Sequence[Checkpoint]) -> str:
    """Per-client rows of the last round, and per round who took part and who dropped."""
    if not checkpoints:
        return '<p class="muted">No round was recorded.</p>'
    last = checkpoints[-1]
    nodes = last.lineage.get("nodes", []) or []
    metric_names = sorted({k for n in nodes for k in (n.get("eval_metrics") or {})})
    rows = []
    for n in nodes:
        evals = n.get("eval_metrics") or {}
        rows.append(
            [
                _td(n.get("name") or n.get("node_id")),
                _td(n.get("node_id")),
                _td(n.get("data_rows"), num=True),
                _td(n.get("num_examples"), num=True),
                f"<td><code>{_e(n.get('data_fingerprint', '-'))}</code></td>",
                *(_td(evals.get(m), num=True) for m in metric_names),
            ]
        )
    table = _table(["client", "node id", "rows", "train examples", "data fingerprint", *metric_names], rows)
    rounds = []
    for c in checkpoints:
        lineage = c.lineage
        names = [str(n.get("name") or n.get("node_id")) for n in lineage.get("nodes", []) or []]
        rejected = lineage.get("rejected_updates", []) or []
        rounds.append(
            [
                _td(c.round, num=True),
                _td(len(names), num=True),
                _td(lineage.get("failed_nodes", 0), num=True),
                _td(", ".join(names) or "-"),
                _td(json.dumps(rejected, default=str) if rejected else "-"),
            ]
        )
    per_round = _table(["round", "participants", "dropped", "clients", "rejected updates"], rounds)
    return f"<h3>Clients in round {last.round}</h3>{table}<h3>Participation per round</h3>{per_round}"


def _version(vr: VersionReport) -> str:
    v = vr.version
    parts = [
        f'<h2>Version {_e(v.name)}:{v.number} <span class="muted">(id {v.id}; aliases: '
        f"{_e(', '.join(v.aliases) or 'none')})</span></h2>"
    ]
    metric_rows = [[_td(k), _td(val, num=True)] for k, val in sorted(v.metrics.items())]
    parts.append(
        f"<details open><summary>Metrics</summary>{_table(['metric', 'value'], metric_rows)}</details>"
    )
    gate_rows = []
    for alias, checks in vr.gates.items():
        verdict = all(c.passed for c in checks)
        for c in checks or []:
            mark = '<span class="pass">passed</span>' if c.passed else '<span class="fail">lacking</span>'
            gate_rows.append(
                [_td(alias), f'<td class="gate">{_e(c.gate)}</td>', f"<td>{mark}</td>", _td(c.detail)]
            )
        if not checks:
            gate_rows.append(
                [_td(alias), _td("(no gate)"), '<td><span class="pass">passed</span></td>', _td("")]
            )
        gate_rows.append(
            [_td(alias), _td("all gates"), f'<td><span class="{"pass" if verdict else "fail"}">'
             f'{"may take it" if verdict else "may not take it"}</span></td>', _td("")]
        )  # fmt: skip
    parts.append("<h3>Gates</h3>" + _table(["alias", "gate", "verdict", "detail"], gate_rows, cls="gates"))
    if vr.approvals:
        rows = [
            [_td(a.alias), _td(a.actor), _td(a.comment), _td(f"{a.created_at:%Y-%m-%d %H:%M}")]
            for a in vr.approvals
        ]
        parts.append("<h3>Approvals</h3>" + _table(["alias", "by", "comment", "when"], rows))
    files = [
        [
            _td(a.kind),
            _td(a.media_type),
            _td(a.size, num=True),
            f"<td><code>sha256:{_e(a.sha256)}</code></td>",
        ]
        for a in v.artifacts
    ]
    total = sum(a.size for a in v.artifacts)
    signer = vr.signer
    if signer.get("signer"):
        who = signer["signer"]
        ident = signer.get("identity", {})
        stored = "stored" if signer.get("signed") else '<span class="fail">missing</span>'
        sig = (
            f"<p>Signed ({_e(who.get('algorithm', '?'))}, key <code>{_e(who.get('key_id', '?'))}</code>) for "
            f"{_e(ident.get('model', '?'))} v{_e(ident.get('version', '?'))} in registry "
            f"<code>{_e(ident.get('registry_id', '?'))}</code> at {_e(ident.get('signed_at', '?'))}; "
            f"signature {stored}.</p>"
        )
    else:
        sig = '<p class="fail">No signed release manifest.</p>'
    parts.append(
        f"<h3>Bundle</h3>{sig}"
        + _table(["file", "media type", "bytes", "digest"], files)
        + f'<p class="muted">{len(v.artifacts)} files, {total} bytes in all.</p>'
    )
    if vr.drift_windows:
        rows = []
        for w in vr.drift_windows:
            stats = ", ".join(
                f"{_e(k)} max {_num(max(vals))}"
                for k, vals in sorted(w.overall.items())
                if isinstance(vals, list) and vals and all(_finite(x) for x in vals)
            )
            rows.append(
                [
                    _td(w.window, num=True),
                    _td(f"{w.source}/{w.stream}".strip("/") or "-"),
                    _td(len(w.sites), num=True),
                    _td(w.window_rows, num=True),
                    '<td><span class="fail">flagged</span></td>'
                    if w.flagged
                    else '<td><span class="pass">ok</span></td>',
                    _td(stats or "-"),
                ]
            )
        parts.append(
            "<h3>Drift</h3>" + _table(["window", "stream", "sites", "rows", "verdict", "statistics"], rows)
        )
    else:
        parts.append('<h3>Drift</h3><p class="muted">No drift window was reported for this version.</p>')
    return "".join(parts)


def render_run_report(report: RunReport) -> str:
    """The report as one self-contained HTML document."""
    run = report.run
    title = f"fedge run {run.run_id}"
    summary = _table(
        [
            "run",
            "status",
            "task",
            "strategy",
            "rounds",
            "mode",
            "reason",
            "started",
            "finished",
            "config hash",
        ],
        [
            [
                _td(run.run_id),
                _td(run.status),
                _td(run.task),
                _td(run.strategy),
                _td(f"{len(report.checkpoints)}/{run.num_rounds}"),
                _td(run.mode),
                _td(run.reason),
                _td(f"{run.created_at:%Y-%m-%d %H:%M:%S}"),
                _td(f"{run.finished_at:%Y-%m-%d %H:%M:%S}" if run.finished_at else "-"),
                f"<td><code>{_e(run.config_hash)}</code></td>",
            ]
        ],
    )
    error = f'<p class="fail">Error: {_e(run.error)}</p>' if run.error else ""
    charts = (
        '<div class="charts">'
        + _chart("accuracy per round", report.checkpoints, ACCURACY_SERIES)
        + _chart("loss per round", report.checkpoints, LOSS_SERIES)
        + "</div>"
    )
    round_metrics = sorted({k for c in report.checkpoints for k in c.metrics})
    round_rows = [
        [_td(c.round, num=True), *(_td(c.metrics.get(m), num=True) for m in round_metrics)]
        for c in report.checkpoints
    ]
    config_rows = [
        [f'<td class="key"><code>{_e(k)}</code></td>', f'<td class="value">{_e(v)}</td>']
        for k, v in _flatten(run.config)
    ]
    versions = "".join(_version(v) for v in report.versions) or (
        '<h2>Version</h2><p class="muted">This run registered no version.</p>'
    )
    triggers = ""
    if report.drift_triggers:
        rows = [
            [
                _td(f"{t.created_at:%Y-%m-%d %H:%M}"),
                _td(f"{t.model}:{t.version}"),
                _td(t.outcome),
                _td(t.run_id or "-"),
                _td(t.reason),
            ]
            for t in report.drift_triggers
        ]
        triggers = "<h2>Drift triggers</h2>" + _table(["when", "version", "outcome", "run", "reason"], rows)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="muted">Report generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC '
        f"by fedge {_e(fedge_version())}.</p>"
        f"{summary}{error}<h2>Rounds</h2>{charts}"
        + _table(["round", *round_metrics], round_rows)
        + f"<h2>Clients</h2>{_clients(report.checkpoints)}"
        + versions
        + triggers
        + '<h2>Config</h2><table class="config"><tbody>'
        + "".join(f"<tr>{k}{v}</tr>" for k, v in config_rows)
        + "</tbody></table></body></html>\n"
    )
