"""The Promote panel (ipywidgets): every gate with its measured value and verdict, a reason box, a
force switch and a Promote button; plus HTML/text views of a decision and of a lineage.

ipywidgets is imported only when a panel is built. Every user-supplied string is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from nb_mlops.core.lineage import Lineage
from nb_mlops.core.promotion import Decision
from nb_mlops.core.promotion.gates import format_value

__all__ = ["PromotePanel", "decision_html", "lineage_html"]

_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "SKIP": "#9a6700"}
_STATUS = {
    "PROMOTED": "#1a7f37",
    "READY": "#0969da",
    "BLOCKED": "#cf222e",
    "ROLLED_BACK": "#9a6700",
}


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def decision_html(decision: Decision) -> str:
    """The gate table of a decision as an HTML fragment (all values escaped)."""
    colour = _STATUS.get(decision.status, "#57606a")
    head = (
        f"<div><b style='color:{colour}'>{_esc(decision.status)}</b> "
        f"run <code>{_esc(decision.run_id)}</code> → model <b>{_esc(decision.model)}</b>"
        f" (champion now: {_esc(decision.previous_version or 'none')})</div>"
    )
    if not decision.gates:
        return head + "<div><i>no gates configured</i></div>"
    rows = "".join(
        "<tr>"
        f"<td><code>{_esc(g.gate)}</code></td>"
        f"<td style='color:{_COLOURS.get(g.verdict, '')};font-weight:bold'>{_esc(g.verdict)}</td>"
        f"<td>{_esc(format_value(g.measured))}</td><td>{_esc(format_value(g.expected))}</td>"
        f"<td>{_esc(g.detail)}</td></tr>"
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
    body = "".join(f"<dt><b>{_esc(k)}</b></dt><dd>{_esc(v)}</dd>" for k, v in items)
    return f"<dl>{body}</dl>"


class PromotePanel:
    """The Promote panel for one candidate: shows `decision` and promotes on click.

    Args:
        decision: the gate check (`nb_mlops.core.promotion.evaluate`).
        on_promote: called with (reason, force) when Promote is clicked; returns the new decision
            or raises an NbMlopsError (shown in the panel, one line).
        reason: initial reason text.
    """

    def __init__(
        self,
        decision: Decision,
        on_promote: Callable[[str | None, bool], Decision],
        reason: str | None = None,
    ) -> None:
        import ipywidgets as w

        self.decision = decision
        self.on_promote = on_promote
        self.table = w.HTML(decision_html(decision))
        self.reason = w.Text(
            value=reason or "",
            placeholder="reason (journaled; required to force)",
            description="Reason",
        )
        self.force = w.Checkbox(value=False, description="Force past failed gates", indent=False)
        self.button = w.Button(description="Promote", button_style="success", icon="rocket")
        self.message = w.HTML("")
        self.button.on_click(lambda _b: self.promote())
        self.force.observe(lambda _c: self._refresh(), names="value")
        self.reason.observe(lambda _c: self._refresh(), names="value")
        self.widget = w.VBox(
            [self.table, w.HBox([self.reason, self.force, self.button]), self.message]
        )
        self._refresh()

    def _refresh(self) -> None:
        done = self.decision.status == "PROMOTED"
        blocked = self.decision.status == "BLOCKED"
        needs_force = blocked and not (self.force.value and self.reason.value.strip())
        self.button.disabled = done or needs_force
        self.button.button_style = "danger" if blocked else "success"
        if blocked and not done:
            self.button.tooltip = "gates failed: tick force and give a reason to promote anyway"

    def promote(self) -> Decision | None:
        """What the Promote button does (callable directly, e.g. from tests)."""
        from nb_mlops.core.errors import NbMlopsError
        from nb_mlops.core.promotion import PromotionBlocked

        self.button.disabled = True
        try:
            result = self.on_promote(self.reason.value.strip() or None, bool(self.force.value))
        except PromotionBlocked as blocked:
            self.decision = blocked.decision
            self.table.value = decision_html(blocked.decision)
            self.message.value = f"<span style='color:#cf222e'>{_esc(str(blocked))}</span>"
            self._refresh()
            return None
        except NbMlopsError as exc:
            self.message.value = f"<span style='color:#cf222e'>error: {_esc(str(exc))}</span>"
            self._refresh()
            return None
        self.decision = result
        self.table.value = decision_html(result)
        self.message.value = f"<span style='color:#1a7f37'>{_esc(result.summary())}</span>"
        self._refresh()
        return result

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, Any]:
        # the widget view where a frontend renders widgets, the gate table as text everywhere else
        bundle: dict[str, Any] = self.widget._repr_mimebundle_() or {}
        bundle["text/plain"] = self.decision.summary() + "\n" + self.decision.table()
        return bundle
