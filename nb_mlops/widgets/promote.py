"""The Promote panel (ipywidgets): every gate with its measured value and verdict, a reason box, a
force switch and a Promote button.

ipywidgets is imported only when a panel is built. Every user-supplied string is escaped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nb_mlops.core.promotion import Decision
from nb_mlops.present.promote import decision_html
from nb_mlops.present.text import esc

__all__ = ["PromotePanel"]


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
            self.message.value = f"<span style='color:#cf222e'>{esc(str(blocked))}</span>"
            self._refresh()
            return None
        except NbMlopsError as exc:
            self.message.value = f"<span style='color:#cf222e'>error: {esc(str(exc))}</span>"
            self._refresh()
            return None
        self.decision = result
        self.table.value = decision_html(result)
        self.message.value = f"<span style='color:#1a7f37'>{esc(result.summary())}</span>"
        self._refresh()
        return result

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, Any]:
        # the widget view where a frontend renders widgets, the gate table as text everywhere else
        bundle: dict[str, Any] = self.widget._repr_mimebundle_() or {}
        bundle["text/plain"] = self.decision.summary() + "\n" + self.decision.table()
        return bundle
