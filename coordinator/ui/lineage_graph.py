"""A version's lineage as a small SVG graph: clients -> rounds -> version <- parent version.

Drawn on the server (no script): every label is escaped; the SVG is inlined into the version page.
"""

from __future__ import annotations

from html import escape
from typing import Any

from registry import ModelVersion

__all__ = ["lineage_svg"]

_BOX_W, _BOX_H, _GAP_Y = 210, 46, 14
_COLS = (10, 290, 560)
_MAX_CLIENTS = 12


def _box(x: int, y: int, title: str, lines: list[str], css: str) -> str:
    text = "".join(
        f'<tspan x="{x + 8}" dy="{14 if i else 0}">{escape(line)}</tspan>' for i, line in enumerate(lines)
    )
    return (
        f'<g class="node {css}"><rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6"/>'
        f'<text x="{x + 8}" y="{y + 16}" class="t">{escape(title)}</text>'
        f'<text x="{x + 8}" y="{y + 32}" class="s">{text}</text></g>'
    )


def _edge(x1: int, y1: int, x2: int, y2: int) -> str:
    return f'<line class="edge" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" marker-end="url(#arrow)"/>'


def _y(i: int) -> int:
    return 40 + i * (_BOX_H + _GAP_Y)


def lineage_svg(version: ModelVersion, parent: ModelVersion | None) -> str:
    """The SVG (a string) of ``version``'s lineage; ``parent`` is its parent version, if any."""
    lineage: dict[str, Any] = dict(version.lineage)
    nodes = [n for n in lineage.get("nodes", []) or [] if isinstance(n, dict)]
    shown = nodes[:_MAX_CLIENTS]
    rounds = int(lineage.get("round") or 0)
    parts: list[str] = []
    for i, node in enumerate(shown):
        name = str(node.get("name") or node.get("node_id") or "?")
        fingerprint = str(node.get("data_fingerprint") or "no fingerprint")[:16]
        rows = node.get("data_rows")
        parts.append(
            _box(
                _COLS[0],
                _y(i),
                name,
                [f"data {fingerprint}… · {rows if rows is not None else '?'} rows"],
                "client",
            )
        )
    if len(nodes) > len(shown):
        parts.append(
            f'<text x="{_COLS[0]}" y="{_y(len(shown)) + 16}">+ {len(nodes) - len(shown)} more clients</text>'
        )
    run_y = _y(max(0, (len(shown) - 1) // 2))
    run_lines = [f"{rounds} round(s) · {lineage.get('strategy', '?')}"]
    failed = lineage.get("failed_nodes")
    if failed:
        run_lines = [f"{rounds} round(s) · {failed} node(s) dropped"]
    parts.append(
        _box(
            _COLS[1],
            run_y,
            f"run {str(version.run_id or lineage.get('run_id') or '?')[:24]}",
            run_lines,
            "run",
        )
    )
    for i in range(len(shown)):
        parts.append(_edge(_COLS[0] + _BOX_W, _y(i) + _BOX_H // 2, _COLS[1], run_y + _BOX_H // 2))
    privacy = lineage.get("privacy") or {}
    spent = privacy.get("epsilon_spent", privacy.get("epsilon")) if isinstance(privacy, dict) else None
    mode = privacy.get("mode", "?") if isinstance(privacy, dict) else "?"
    version_lines = [f"privacy {mode}" + (f" · ε spent {spent}" if spent is not None else "")]
    parts.append(_box(_COLS[2], run_y, f"{version.name}:{version.number}", version_lines, "version"))
    parts.append(_edge(_COLS[1] + _BOX_W, run_y + _BOX_H // 2, _COLS[2], run_y + _BOX_H // 2))
    if parent is not None:
        parent_y = max(0, run_y - _BOX_H - _GAP_Y - 10) if run_y > _BOX_H else run_y + _BOX_H + _GAP_Y + 10
        parts.append(
            _box(_COLS[2], parent_y, f"parent {parent.name}:{parent.number}", ["warm start"], "parent")
        )
        start, end = (parent_y + _BOX_H, run_y) if parent_y < run_y else (parent_y, run_y + _BOX_H)
        parts.append(_edge(_COLS[2] + _BOX_W // 2, start, _COLS[2] + _BOX_W // 2, end))
    height = max(_y(max(len(shown), 1)) + 30, run_y + 2 * (_BOX_H + _GAP_Y) + 40)
    width = _COLS[2] + _BOX_W + 10
    return (
        f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="lineage of {escape(version.name)}:{version.number}">'  # noqa: E501
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>'
        f'<text x="{_COLS[0]}" y="22" class="h">clients (data fingerprints)</text>'
        f'<text x="{_COLS[1]}" y="22" class="h">training run</text>'
        f'<text x="{_COLS[2]}" y="22" class="h">version</text>' + "".join(parts) + "</svg>"
    )
