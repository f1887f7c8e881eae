"""An experiment's runs as text: cells, column choice, captions, and HTML/text tables with a plot.

`RunsTable` shows one page without widgets: HTML where HTML renders, text elsewhere. All user
strings are escaped (HTML) or stripped of control characters (text).
"""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from typing import Any

from nb_mlops.core.runs import RunRow, RunsPage, experiment_url
from nb_mlops.present.text import esc, format_number, plain

__all__ = [
    "RunsTable",
    "caption",
    "columns",
    "format_duration",
    "format_started",
    "html_table",
    "metric_svg",
    "ordered_metrics",
    "param_groups",
    "sort_key_problem",
    "text_table",
]

# the tag a tracked run lists its user's parameters in (written by `nb_mlops.core.tracking`)
USER_PARAMS_TAG = "nb_mlops.params"
MAX_PARAM_COLUMNS = 8
MAX_METRIC_COLUMNS = 8
_STATUS_COLOURS = {
    "FINISHED": "#1a7f37",
    "FAILED": "#cf222e",
    "KILLED": "#9a6700",
    "RUNNING": "#0969da",
    "SCHEDULED": "#57606a",
}


def format_duration(row: RunRow) -> str:
    """A run's duration, short (`4.1s`, `3m05s`, `2h10m`), or `running`."""
    seconds = row.duration_s
    if seconds is None:
        return "running" if row.status == "RUNNING" else ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def format_started(row: RunRow) -> str:
    """A run's start time in UTC, to the second."""
    if row.start_time is None:
        return ""
    return datetime.fromtimestamp(row.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def param_groups(page: RunsPage) -> tuple[list[str], list[str]]:
    """(the user's parameters, in the order of their `parameters` cell; the others, sorted).

    A tracked run names its user's parameters (the notebook's `parameters` cell) in the tag
    `nb_mlops.params`; every parameter of a pipeline or production run is the user's; a run
    without the tag (plain MLflow) counts as all the user's. The rest is what sklearn autolog
    added (`bootstrap`, `ccp_alpha`, …).
    """
    user: dict[str, None] = {}
    for row in page.rows:
        listed = row.tags.get(USER_PARAMS_TAG)
        if listed is None or row.tags.get("nb_mlops.mode") in ("pipeline", "production"):
            user.update(dict.fromkeys(sorted(row.params)))
            continue
        try:
            names = json.loads(listed)
        except ValueError:
            names = list(row.params)
        user.update(dict.fromkeys(n for n in names if n in row.params))
    keys = page.param_keys
    return list(user), [k for k in keys if k not in user]


def ordered_metrics(page: RunsPage) -> list[str]:
    """Metric keys: the sort metric first, the user's own next, autolog's last (`training_*`,
    and `<Estimator>_score_<data>` from scoring calls)."""
    metrics = sorted(page.metric_keys, key=lambda m: m.startswith("training_") or m[:1].isupper())
    if page.order is not None and page.order.kind == "metrics" and page.order.key in metrics:
        metrics = [page.order.key, *[m for m in metrics if m != page.order.key]]
    return metrics


def columns(page: RunsPage) -> tuple[list[str], list[str]]:
    """(param keys, metric keys) to show: the sort key first, the user's parameters before
    autolog's, then the rest up to a cap."""
    user, other = param_groups(page)
    params = user + other
    if page.order is not None and page.order.kind == "params" and page.order.key in params:
        params = [page.order.key, *[p for p in params if p != page.order.key]]
    return params[:MAX_PARAM_COLUMNS], ordered_metrics(page)[:MAX_METRIC_COLUMNS]


def sort_key_problem(page: RunsPage) -> str | None:
    """The error for a page sorted by a metric or param no run of the experiment has, else None."""
    if not (page.sort_key_missing and page.order is not None):
        return None
    known = page.metric_keys if page.order.kind == "metrics" else page.param_keys
    return (
        f"no run of experiment {page.experiment!r} has {page.order.label()!r}; "
        f"known: {', '.join(known) or 'none'}"
    )


def caption(page: RunsPage) -> str:
    """One line saying which runs of which experiment the page shows, and in what order."""
    if page.experiment_id is None:
        return f"experiment {page.experiment!r}: no runs yet"
    if not page.rows:
        return f"experiment {page.experiment!r}: no runs" + (" on this page" if page.offset else "")
    order = "newest first"
    if page.order is not None:
        order = f"by {page.order.label()} {'ascending' if page.order.ascending else 'descending'}"
    more = ", more on the next page" if page.next_page_token else ""
    text = (
        f"experiment {page.experiment!r}: runs {page.offset + 1}–{page.offset + len(page.rows)}, "
        f"{order}{more}"
    )
    if page.sort_key_missing and page.order is not None:
        text += f" (no run has {page.order.label()})"
    return text


# --- HTML and text tables --------------------------------------------------------------------------


def html_table(page: RunsPage, plot_metric: str | None = None, with_plot: bool = True) -> str:
    """The page as a self-contained HTML table (and SVG plot), every user string escaped."""
    params, metrics = columns(page)
    head = ["run", "status", "started (UTC)", "duration"]
    head += [f"params.{p}" for p in params] + list(metrics)
    sort_label = page.order.label() if page.order is not None else None
    cells = []
    for name in head:
        mark = ""
        if sort_label is not None and name in (sort_label, f"params.{sort_label}"):
            mark = " ▲" if page.order is not None and page.order.ascending else " ▼"
        cells.append(f"<th style='text-align:left;padding:2px 8px'>{esc(name)}{mark}</th>")
    lines = [
        "<div class='nb-mlops-runs'>",
        f"<div style='margin:4px 0'><b>{esc(caption(page))}</b></div>",
    ]
    if page.rows:
        lines.append("<div style='overflow-x:auto'><table style='border-collapse:collapse'>")
        lines.append("<thead><tr>" + "".join(cells) + "</tr></thead><tbody>")
        for row in page.rows:
            colour = _STATUS_COLOURS.get(row.status, "#57606a")
            label = row.name or row.run_id[:8]
            tds = [
                f"<a href='{esc(row.url)}' target='_blank' rel='noopener noreferrer' "
                f"title='{esc(row.run_id)}'>{esc(label)}</a>",
                f"<span style='color:{colour}'>{esc(row.status)}</span>",
                esc(format_started(row)),
                esc(format_duration(row)),
                *[esc(row.params.get(p, "")) for p in params],
                *[esc(format_number(row.metrics.get(m))) for m in metrics],
            ]
            lines.append(
                "<tr>" + "".join(f"<td style='padding:2px 8px'>{td}</td>" for td in tds) + "</tr>"
            )
        lines.append("</tbody></table></div>")
    if with_plot and page.rows:
        lines.append(
            metric_svg(page, plot_metric or page.metric or (metrics[0] if metrics else None))
        )
    lines.append("</div>")
    return "\n".join(lines)


def text_table(page: RunsPage) -> str:
    """The page as plain text for a terminal: the first metrics and params, control chars removed."""
    params, metrics = columns(page)
    params, metrics = params[:3], metrics[:4]
    header = [
        "run",
        "status",
        "started (UTC)",
        "duration",
        *metrics,
        *[f"params.{p}" for p in params],
    ]
    body = [
        [
            plain(row.name or row.run_id[:8], 24),
            row.status,
            format_started(row),
            format_duration(row),
            *[format_number(row.metrics.get(m)) for m in metrics],
            *[plain(row.params.get(p, ""), 16) for p in params],
        ]
        for row in page.rows
    ]
    header = [plain(h, 24) for h in header]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [plain(caption(page))]
    if body:
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
        if page.experiment_id is not None:
            base = page.rows[0].url.split("/#/")[0]
            lines.append(f"all runs: {experiment_url(base, page.experiment_id)} (nb-mlops ui)")
    return "\n".join(line.rstrip() for line in lines)


def metric_svg(page: RunsPage, metric: str | None, width: int = 520, height: int = 170) -> str:
    """An inline SVG of `metric` across the page's runs, oldest to newest; hover shows each run."""
    if metric is None:
        return "<div><i>no metric to plot</i></div>"
    points = [
        (row, row.metrics[metric])
        for row in sorted(page.rows, key=lambda r: (r.start_time or 0, r.run_id))
        if metric in row.metrics and _plottable(row.metrics[metric])
    ]
    if not points:
        return f"<div><i>no finite values of {esc(metric)} on this page</i></div>"
    low = min(v for _, v in points)
    high = max(v for _, v in points)
    span = (high - low) or 1.0
    left, right, top, bottom = 56, 10, 18, 22
    step = (width - left - right) / max(len(points) - 1, 1)
    xy = [
        (left + i * step, top + (high - v) / span * (height - top - bottom))
        for i, (_, v) in enumerate(points)
    ]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(xy))
    dots = "".join(
        f"<a href='{esc(row.url)}' target='_blank' rel='noopener noreferrer'>"
        f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='#0969da'>"
        f"<title>{esc(row.name or row.run_id)}: {esc(format_number(v))}</title></circle></a>"
        for (row, v), (x, y) in zip(points, xy, strict=True)
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"role='img' aria-label='{esc(metric)} across runs' style='font:11px sans-serif'>"
        f"<text x='{left}' y='12'>{esc(metric)} across {len(points)} runs (oldest → newest)</text>"
        f"<text x='{left - 4}' y='{top + 4}' text-anchor='end'>{esc(format_number(high))}</text>"
        f"<text x='{left - 4}' y='{height - bottom}' text-anchor='end'>{esc(format_number(low))}</text>"
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#8c959f'/>"
        f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' "
        "stroke='#8c959f'/>"
        f"<path d='{path}' fill='none' stroke='#0969da' stroke-width='1.5'/>{dots}</svg>"
    )


def _plottable(value: float) -> bool:
    # MLflow stores ±inf as ±sys.float_info.max: both would flatten every other point.
    return math.isfinite(value) and abs(value) < sys.float_info.max


class RunsTable:
    """A page shown without widgets: HTML where HTML renders, text elsewhere."""

    def __init__(self, page: RunsPage, plot_metric: str | None = None) -> None:
        self.page = page
        self.plot_metric = plot_metric

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {
            "text/plain": text_table(self.page),
            "text/html": html_table(self.page, self.plot_metric),
        }

    def __repr__(self) -> str:
        return text_table(self.page)
