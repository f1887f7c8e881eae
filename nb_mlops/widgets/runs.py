"""The runs view: a sortable, paged table of an experiment's runs and a plot of one metric.

`RunsView` is the ipywidgets face (sort and page on the store, never loading every run). It displays
as a bundle that also carries an HTML table and a text table, so papermill output, nbconvert and
terminal IPython show the same runs. All user strings are escaped.
"""

from __future__ import annotations

from typing import Any

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.runs import OrderBy, RunsPage, runs
from nb_mlops.present.runs import html_table, metric_svg, text_table
from nb_mlops.present.text import esc

__all__ = ["RunsView"]


_NEWEST = "(newest first)"


class RunsView:
    """An ipywidgets view of an experiment's runs: sort by any column, page, plot a metric.

    Sorting and paging query the store again (one page at a time), so a 10,000-run experiment
    costs what a 50-run one does. Displayed, it also carries the HTML and text tables of the
    current page for frontends without a widget manager.

    Example:
        >>> RunsView(nb_mlops.runs(metric="acc"))        # doctest: +SKIP
    """

    def __init__(self, page: RunsPage, cfg: Config | None = None) -> None:
        import ipywidgets as w

        self.cfg = cfg or load_config()
        self.page = page
        self._tokens: list[str | None] = [page.page_token]
        self._plot_metric: str | None = page.metric
        self.sort = w.Dropdown(description="sort by", layout=w.Layout(width="260px"))
        self.ascending = w.ToggleButton(
            value=page.order.ascending if page.order else False,
            description="ascending",
            layout=w.Layout(width="110px"),
        )
        self.plot_choice = w.Dropdown(description="plot", layout=w.Layout(width="220px"))
        self.prev = w.Button(description="◀ prev", layout=w.Layout(width="80px"))
        self.next = w.Button(description="next ▶", layout=w.Layout(width="80px"))
        self.table = w.HTML()
        self.plot = w.HTML()
        self.error = w.HTML()
        controls = w.HBox([self.sort, self.ascending, self.prev, self.next, self.plot_choice])
        self.widget = w.VBox([controls, self.error, self.table, self.plot])
        self._refresh_controls()
        self._render()
        self.sort.observe(self._on_sort, names="value")
        self.ascending.observe(self._on_sort, names="value")
        self.plot_choice.observe(self._on_plot, names="value")
        self.prev.on_click(self._on_prev)
        self.next.on_click(self._on_next)

    # state → widgets

    def _sort_options(self) -> list[tuple[str, str]]:
        options = [(_NEWEST, "")]
        options += [(m, f"metrics.{m}") for m in self.page.metric_keys]
        options += [(f"params.{p}", f"params.{p}") for p in self.page.param_keys]
        options += [("status", "status"), ("run name", "run_name"), ("start time", "start_time")]
        options += [("end time", "end_time")]
        current = self._sort_value(self.page.order)
        if current not in [value for _, value in options]:
            options.append((current, current))  # sorted by a key this page does not show
        return options

    @staticmethod
    def _sort_value(order: OrderBy | None) -> str:
        if order is None:
            return ""
        return order.key if order.kind == "attributes" else f"{order.kind}.{order.key}"

    def _refresh_controls(self) -> None:
        self._quiet = True
        try:
            self.sort.options = self._sort_options()
            self.sort.value = self._sort_value(self.page.order)
            metrics = self.page.metric_keys
            self.plot_choice.options = metrics or [""]
            if self._plot_metric not in metrics:
                self._plot_metric = metrics[0] if metrics else None
            self.plot_choice.value = self._plot_metric or (metrics[0] if metrics else "")
            self.prev.disabled = len(self._tokens) <= 1
            self.next.disabled = self.page.next_page_token is None
        finally:
            self._quiet = False

    def _render(self) -> None:
        self.table.value = html_table(self.page, with_plot=False)
        self.plot.value = metric_svg(self.page, self._plot_metric) if self.page.rows else ""

    def _load(self, token: str | None) -> None:
        from nb_mlops.core.errors import NbMlopsError

        order = self.sort.value or None
        try:
            self.page = runs(
                self.page.experiment,
                order_by=order,
                ascending=bool(self.ascending.value),
                limit=self.page.limit,
                page_token=token,
                cfg=self.cfg,
            )
        except NbMlopsError as exc:  # shown in the view: a callback has nowhere to raise to
            self.error.value = f"<span style='color:#cf222e'>{esc(exc)}</span>"
            return
        self.error.value = ""
        self._refresh_controls()
        self._render()

    # widget events

    def _on_sort(self, _change: Any) -> None:
        if self._quiet:
            return
        if not self.sort.value:  # newest first has one direction in MLflow: descending
            self._quiet = True
            self.ascending.value = False
            self._quiet = False
        self._tokens = [None]
        self._load(None)

    def _on_plot(self, change: Any) -> None:
        if self._quiet:
            return
        self._plot_metric = change["new"] or None
        self._render()

    def _on_next(self, _button: Any) -> None:
        if self.page.next_page_token:
            self._tokens.append(self.page.next_page_token)
            self._load(self.page.next_page_token)

    def _on_prev(self, _button: Any) -> None:
        if len(self._tokens) > 1:
            self._tokens.pop()
            self._load(self._tokens[-1])

    # display

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = dict(self.widget._repr_mimebundle_() or {})
        bundle["text/plain"] = text_table(self.page)
        bundle["text/html"] = html_table(self.page, self._plot_metric)
        return bundle
