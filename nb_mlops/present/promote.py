"""Promotion as HTML: the gate table of a decision and a model version's lineage.

Every user-supplied string is escaped.
"""

from __future__ import annotations

from nb_mlops.core.lineage import Lineage
from nb_mlops.core.promotion import Decision
from nb_mlops.core.promotion.gates import format_value
from nb_mlops.present.text import esc

__all__ = ["decision_html", "lineage_html"]

_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "SKIP": "#9a6700"}
_STATUS = {
    "PROMOTED": "#1a7f37",
    "READY": "#0969da",
    "BLOCKED": "#cf222e",
    "ROLLED_BACK": "#9a6700",
}


def decision_html(decision: Decision) -> str:
    """The gate table of a decision as an HTML fragment (all values escaped)."""
    colour = _STATUS.get(decision.status, "#57606a")
    head = (
        f"<div><b style='color:{colour}'>{esc(decision.status)}</b> "
        f"run <code>{esc(decision.run_id)}</code> → model <b>{esc(decision.model)}</b>"
        f" (champion now: {esc(decision.previous_version or 'none')})</div>"
    )
    if not decision.gates:
        return head + "<div><i>no gates configured</i></div>"
    rows = "".join(
        "<tr>"
        f"<td><code>{esc(g.gate)}</code></td>"
        f"<td style='color:{_COLOURS.get(g.verdict, '')};font-weight:bold'>{esc(g.verdict)}</td>"
        f"<td>{esc(format_value(g.measured))}</td><td>{esc(format_value(g.expected))}</td>"
        f"<td>{esc(g.detail)}</td></tr>"
        for g in decision.gates
    )
    return (
        head + "<table><thead><tr><th>gate</th><th>verdict</th><th>measured</th><th>expected</th>"
        f"<th>detail</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def lineage_html(found: Lineage) -> str:
    """A lineage as an HTML definition list (all values escaped)."""
    data = found.as_dict()
    items = [
        ("model", f"{found.model} v{found.version} " + " ".join("@" + a for a in found.aliases)),
        ("source", f"{found.model_source} (sha256 {str(found.model_sha256 or '-')[:12]})"),
        (
            "pipeline run",
            f"{data['pipeline_run'].get('run_id')} ({data['pipeline_run'].get('status')}, {data['pipeline_run'].get('mode')})",
        ),
        (
            "pipeline version",
            f"{data['pipeline'].get('name')} {str(data['pipeline'].get('hash') or '-')[:12]}",
        ),
        (
            "notebook",
            f"{data['notebook'].get('path')} sha256 {str(data['notebook'].get('sha256') or '-')[:12]} git {str(data['notebook'].get('git_commit') or '-')[:12]}",
        ),
        (
            "data",
            ", ".join(f"{d['ref']} ({d['digest'][:12]})" for d in found.data) or "none recorded",
        ),
        (
            "environment",
            f"python {found.environment.get('python') or '?'}; "
            + ", ".join(found.environment.get("requirements", [])[:8]),
        ),
        (
            "parameters",
            ", ".join(f"{k}={v}" for k, v in sorted(found.parameters.items())) or "none",
        ),
    ]
    if found.promotion:
        p = found.promotion
        items.insert(
            2, ("promoted", f"{p['action']} {p['when']} by {p['who']}: {p.get('reason') or '-'}")
        )
    body = "".join(f"<dt><b>{esc(k)}</b></dt><dd>{esc(v)}</dd>" for k, v in items)
    return f"<dl>{body}</dl>"
