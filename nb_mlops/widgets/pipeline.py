# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""The pipeline progress view: a per-step table (status, duration, current cell) updated live while
`%pipeline run` goes. ipywidgets is imported only when the view is built; every string shown is
escaped."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["PipelineProgress", "render_html"]

_COLORS = {
    "QUEUED": "#888",
    "RUNNING": "#b58900",
    "SUCCEEDED": "#2e7d32",
    "FAILED": "#c62828",
    "CANCELLED": "#8e24aa",
}


def render_html(snap: dict[str, Any]) -> str:
    """The status snapshot (as in the status file) as an HTML table; all text escaped."""
    esc = html.escape
    rows = []
    for step, state in snap.get("steps", {}).items():
        status = str(state.get("status", ""))
        label = status + (" (cached)" if state.get("cached") else "")
        duration = "" if state.get("duration") is None else f"{float(state['duration']):.2f} s"
        detail = state.get("error") or state.get("cell") or ""
        rows.append(
            f"<tr><td>{esc(str(step))}</td>"
            f"<td style='color:{_COLORS.get(status, '#000')}'>{esc(label)}</td>"
            f"<td>{esc(duration)}</td><td>{esc(str(detail))}</td></tr>"
        )
    title = f"{esc(str(snap.get('pipeline', '')))} · run {esc(str(snap.get('run_id', ''))[:8])} · {esc(str(snap.get('status', '')))}"
    return (
        f"<b>{title}</b><table><tr><th>step</th><th>status</th><th>duration</th><th>cell / error</th></tr>"
        + "".join(rows)
        + "</table>"
    )


class PipelineProgress:
    """Call it with status snapshots; it shows them in one widget (or prints, without ipywidgets)."""

    def __init__(self) -> None:
        self.widget: Any = None
        try:
            import ipywidgets
            from IPython.display import display
        except ImportError:  # pragma: no cover - ipywidgets is a dependency
            return
        self.widget = ipywidgets.HTML(value="")
        display(self.widget)

    def __call__(self, snap: dict[str, Any]) -> None:
        if self.widget is not None:
            self.widget.value = render_html(snap)
