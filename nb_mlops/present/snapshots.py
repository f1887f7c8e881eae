"""Data versions as text: tables of snapshots (plain and HTML) and of a profile.

Every user-provided string (names, messages, column names, values) is HTML-escaped: it is shown as
text, never markup.
"""

from __future__ import annotations

import html
from typing import Any

from nb_mlops.present.text import format_size

__all__ = ["profile_html", "snapshots_html", "snapshots_text"]


def snapshots_text(items: list[Any]) -> str:
    """Plain-text table of snapshot versions."""
    if not items:
        return "no snapshots yet: %snapshot df -n NAME"
    lines = [f"{'snapshot':<28} {'kind':<6} {'rows':>12} {'added':>10} {'size':>10}  created"]
    for s in items:
        rows = f"{s.rows:,}" if s.rows is not None else "-"
        lines.append(
            f"{s.ref:<28} {s.kind:<6} {rows:>12} {format_size(s.bytes_added if s.version else 0):>10} "
            f"{format_size(s.size):>10}  {s.created[:19]}" + (f"  {s.message}" if s.message else "")
        )
    return "\n".join(lines)


def profile_html(profile: dict[str, Any]) -> str:
    """HTML table of a data profile (type, nulls, range, mean, top values per column), escaped."""
    cols = profile.get("columns", {})
    if not cols:
        return ""
    head = "<tr><th>column</th><th>type</th><th>nulls</th><th>min</th><th>max</th><th>mean</th><th>top</th></tr>"
    body = []
    for name, stats in cols.items():
        top = ", ".join(f"{v} ({n})" for v, n in stats.get("top", [])[:3])
        cells = [
            name,
            stats.get("type"),
            stats.get("nulls"),
            stats.get("min"),
            stats.get("max"),
            stats.get("mean"),
            top,
        ]
        body.append(
            "<tr>"
            + "".join(f"<td>{html.escape(str(c if c is not None else ''))}</td>" for c in cells)
            + "</tr>"
        )
    note = " (quantiles, histograms and top values on a sample)" if profile.get("sampled") else ""
    return (
        f"<table>{head}{''.join(body)}</table><small>{profile.get('rows', 0):,} rows{note}</small>"
    )


def snapshots_html(items: list[Any]) -> str:
    """HTML table of snapshot versions, every value escaped."""
    if not items:
        return "<i>no snapshots yet: %snapshot df -n NAME</i>"
    head = "<tr><th>snapshot</th><th>kind</th><th>rows</th><th>size</th><th>created</th><th>message</th></tr>"
    body = []
    for s in items:
        cells = [
            s.ref,
            s.kind,
            f"{s.rows:,}" if s.rows is not None else "-",
            format_size(s.size),
            s.created[:19],
            s.message or "",
        ]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"
