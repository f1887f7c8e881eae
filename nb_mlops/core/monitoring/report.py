"""How a check reads: one text table (CLI, magics without HTML), one HTML fragment (widgets,
notebook output) and one standalone HTML report (the check's MLflow artifact), with inline SVG
plots of the reference and current distributions. No network resources; every name and value
from the data is escaped.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nb_mlops.core.monitoring.check import MonitorResult
    from nb_mlops.core.monitoring.drift import DriftReport, FeatureDrift

__all__ = ["drift_table", "html_fragment", "html_report", "svg_plot", "text"]

_VERDICT_COLOUR = {"ok": "#1a7f37", "drift": "#9a6700", "decay": "#cf222e"}
_REF, _CUR = "#8c959f", "#fb8500"
# the statistics shown per kind, in table order
_SHOWN = {
    "numeric": ("ks", "ks_p", "wasserstein", "psi"),
    "categorical": ("js", "psi", "cramers_v", "chi2_p"),
}


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.3f}"


def _quiet_verdict(f: FeatureDrift) -> str:
    if f.schema == "new":
        return "new"
    return "not compared" if f.kind == "other" else "ok"


def _quiet_why(f: FeatureDrift) -> str:
    if f.schema == "new":
        return "new column"
    if f.kind == "other":
        return "values of this type (dates, times, nested) are not compared; missing share and type are"
    return ""


def drift_table(report: DriftReport) -> list[dict[str, str]]:
    """One row per feature: name, kind, verdict, its statistics and why it drifted."""
    rows = []
    for f in report.features:
        shown = _SHOWN.get(f.kind, ())
        stats = ", ".join(f"{k} {_num(f.stats.get(k))}" for k in shown if k in f.stats)
        if f.stats.get("missing"):
            stats += f"{', ' if stats else ''}missing {f.missing_ref:.1%}→{f.missing_cur:.1%}"
        rows.append(
            {
                "feature": f.name,
                "kind": f.kind,
                "verdict": "DRIFT" if f.drifted else _quiet_verdict(f),
                "statistics": stats or "-",
                "why": "; ".join(f.reasons) or _quiet_why(f),
            }
        )
    return rows


def _plain_table(rows: list[dict[str, str]], columns: list[str]) -> list[str]:
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    out = ["  ".join(c.ljust(widths[c]) for c in columns)]
    out += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return out


def text(result: MonitorResult) -> str:
    """The whole check as plain text."""
    lines = [result.summary()]
    d = result.drift
    how = (
        "every row"
        if d.exact
        else f"sketches ({d.sample_rows[0]:,} / {d.sample_rows[1]:,} sampled rows)"
        if d.sample_rows
        else "sketches"
    )
    lines.append(f"drift: {d.summary()} [{how}, {d.seconds * 1000:.0f} ms]")
    rows = drift_table(d)
    if rows:
        lines += [
            "  " + line
            for line in _plain_table(rows, ["feature", "kind", "verdict", "statistics", "why"])
        ]
    if result.decay is not None:
        lines.append("decay: " + result.decay.summary())
        for m in result.decay.metrics:
            lines.append(
                f"  {m.metric:<18} promoted {m.promoted:.4g} ({m.promoted_as})  now {m.current:.4g}  "
                f"worse by {m.worsening:+.1%}{'  DECAY' if m.decayed else ''}"
            )
        for name, why in result.decay.skipped.items():
            lines.append(f"  {name:<18} not recomputed: {why}")
    for action in result.actions:
        lines.append(
            f"action {action.name}{' ' + action.event if action.event else ''}: {action.status} — {action.detail or action.reason}"
        )
    if result.run_id:
        lines.append(f"run {result.run_id}")
    return "\n".join(lines)


def svg_plot(plot: dict[str, Any], title: str, width: int = 360, height: int = 150) -> str:
    """Reference (grey) and current (orange) shares as an inline SVG bar chart."""
    ref, cur = plot.get("ref", []), plot.get("cur", [])
    if not ref:
        return ""
    top = max(max(ref, default=0), max(cur, default=0)) or 1.0
    left, bottom, inner_h = 4, 18, height - 40
    n = len(ref)
    slot = (width - 2 * left) / n
    bars = []
    for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
        x = left + i * slot
        for j, (value, colour) in enumerate(((r, _REF), (c, _CUR))):
            h = inner_h * value / top
            bars.append(
                f"<rect x='{x + j * slot / 2:.1f}' y='{height - bottom - h:.1f}' "
                f"width='{max(slot / 2 - 0.5, 0.5):.1f}' height='{h:.1f}' fill='{colour}'/>"
            )
    if plot.get("kind") == "numeric":
        edges = plot.get("edges", [])
        axis = f"{_num(edges[0])} … {_num(edges[-1])}" if edges else ""
    else:
        axis = " · ".join(str(lab)[:10] for lab in plot.get("labels", [])[:6])
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"role='img' aria-label='{_esc(title)}'>"
        f"<text x='4' y='12' font-size='11' font-family='sans-serif'>{_esc(title)}</text>"
        + "".join(bars)
        + f"<text x='4' y='{height - 4}' font-size='10' font-family='sans-serif' fill='#57606a'>"
        f"{_esc(axis)}</text></svg>"
    )


def _table_html(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p><i>no features compared</i></p>"
    head = "".join(f"<th>{_esc(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>"
        + "".join(
            f"<td style='color:{_VERDICT_COLOUR['drift'] if v == 'DRIFT' else 'inherit'}'>{_esc(v)}</td>"
            for v in row.values()
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plots(features: list[FeatureDrift], limit: int) -> str:
    shown = [f for f in features if f.drifted and f.plot][:limit]
    if not shown:
        return ""
    legend = (
        f"<p style='font-size:11px'><span style='color:{_REF}'>■</span> reference "
        f"<span style='color:{_CUR}'>■</span> current</p>"
    )
    return legend + "".join(
        f"<div style='display:inline-block;margin:4px'>{svg_plot(f.plot, f.name)}</div>"
        for f in shown
    )


def html_fragment(result: MonitorResult, plots: int = 12) -> str:
    """The check as an HTML fragment: verdict, drift table, plots, decay, actions."""
    colour = _VERDICT_COLOUR.get(result.verdict, "#57606a")
    parts = [
        f"<div><b style='color:{colour}'>{_esc(result.verdict.upper())}</b> "
        f"{_esc(result.summary())}</div>",
        _table_html(drift_table(result.drift)),
        _plots(result.drift.features, plots),
    ]
    if result.decay is not None:
        rows = "".join(
            f"<tr><td>{_esc(m.metric)}</td><td>{_num(m.promoted)}</td><td>{_num(m.current)}</td>"
            f"<td>{m.worsening:+.1%}</td><td>{'DECAY' if m.decayed else 'ok'}</td></tr>"
            for m in result.decay.metrics
        )
        parts.append(
            f"<p>{_esc(result.decay.summary())}</p><table><thead><tr><th>metric</th>"
            "<th>promoted</th><th>now</th><th>worse by</th><th>verdict</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    if result.actions:
        items = "".join(
            f"<li>{_esc(a.name)} {_esc(a.event or '')}: <b>{_esc(a.status)}</b> — "
            f"{_esc(a.detail or a.reason)}</li>"
            for a in result.actions
        )
        parts.append(f"<ul>{items}</ul>")
    return "".join(parts)


def html_report(result: MonitorResult) -> str:
    """A standalone HTML page (no external resources) for the check's MLflow artifact."""
    d = result.drift
    facts = [
        ("model", f"{result.model} version {result.version}"),
        ("data", d.current),
        ("reference", d.reference),
        ("rows", f"{d.rows_cur:,} (reference {d.rows_ref:,})"),
        ("computed from", "every row" if d.exact else f"sketches, {d.sample_rows}"),
        ("check run", result.run_id or "-"),
    ]
    dl = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>nb_mlops check: {_esc(result.model)} on {_esc(d.current)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #d0d7de;padding:3px 8px;font-size:13px;text-align:left}"
        "dt{font-weight:bold;float:left;width:9em}dd{margin-left:10em}</style></head><body>"
        f"<h2>Monitoring check</h2><dl>{dl}</dl>{html_fragment(result, plots=100)}</body></html>"
    )
