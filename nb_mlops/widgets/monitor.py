"""The monitoring view (ipywidgets): the check's verdict, the drift table, a distribution plot per
feature (drifted features first) chosen from a list, decay and the policy's actions.

ipywidgets is imported only when a view is built; outside a widget frontend the view shows the
check as text. Every name and value from the data is escaped (the report module does it).
"""

from __future__ import annotations

import html
from typing import Any

from nb_mlops.core.monitoring import report
from nb_mlops.core.monitoring.check import MonitorResult

__all__ = ["MonitorView"]


class MonitorView:
    """A check, shown: verdict and summary, drift table, one feature's distributions, decay.

    Args:
        result: the check (`nb_mlops.monitor(...)`).
    """

    def __init__(self, result: MonitorResult) -> None:
        import ipywidgets as w

        self.result = result
        features = sorted(
            (f for f in result.drift.features if f.plot),
            key=lambda f: (not f.drifted, f.name),
        )
        self._plots = {f.name: f for f in features}
        self.header = w.HTML(self._header())
        self.table = w.HTML(report._table_html(report.drift_table(result.drift)))
        self.feature = w.Dropdown(
            options=[(f"{f.name}{' (drifted)' if f.drifted else ''}", f.name) for f in features],
            description="Feature",
        )
        self.plot = w.HTML()
        self.feature.observe(lambda _change: self._show(), names="value")
        self.details = w.HTML(self._details())
        self.widget = w.VBox([self.header, self.table, self.feature, self.plot, self.details])
        self._show()

    def _header(self) -> str:
        r = self.result
        colour = report._VERDICT_COLOUR.get(r.verdict, "#57606a")
        where = "every row" if r.drift.exact else "snapshot sketches"
        return (
            f"<div><b style='color:{colour};font-size:1.2em'>{html.escape(r.verdict.upper())}</b> "
            f"{html.escape(r.summary())}<br><small>reference {html.escape(r.reference)}, "
            f"from {where} in {r.drift.seconds * 1000:.0f} ms; run {html.escape(str(r.run_id))}"
            "</small></div>"
        )

    def _details(self) -> str:
        r = self.result
        parts = []
        if r.decay is not None:
            rows = "".join(
                f"<tr><td>{html.escape(m.metric)}</td><td>{m.promoted:.4g}</td>"
                f"<td>{m.current:.4g}</td><td>{m.worsening:+.1%}</td>"
                f"<td>{'DECAY' if m.decayed else 'ok'}</td></tr>"
                for m in r.decay.metrics
            )
            parts.append(
                f"<p>{html.escape(r.decay.summary())}</p><table><tr><th>metric</th>"
                f"<th>promoted</th><th>now</th><th>worse by</th><th></th></tr>{rows}</table>"
            )
        if r.actions:
            parts.append(
                "<ul>"
                + "".join(
                    f"<li>{html.escape(a.name)} {html.escape(a.event or '')}: "
                    f"<b>{html.escape(a.status)}</b> — {html.escape(a.detail or a.reason)}</li>"
                    for a in r.actions
                )
                + "</ul>"
            )
        return "".join(parts)

    def _show(self) -> None:
        chosen = self._plots.get(str(self.feature.value))
        if chosen is None:
            self.plot.value = "<i>no distribution to show</i>"
            return
        self.plot.value = report.svg_plot(chosen.plot, chosen.name, width=520, height=200)

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, Any]:
        # the widget where a frontend renders widgets, the check as text everywhere else
        bundle: dict[str, Any] = self.widget._repr_mimebundle_() or {}
        bundle["text/plain"] = self.result.text()
        return bundle
