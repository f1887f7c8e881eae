"""`nb-mlops runs` (one page of an experiment's runs) and `nb-mlops ui` (the MLflow UI on our store).

`runs` reads the embedded store directly (no mlflow import), so it answers in a fraction of a second.
`ui` starts `mlflow ui` on 127.0.0.1 with the configured backend, registry and artifact root.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import click

from nb_mlops.core.config import load_config
from nb_mlops.present.text import format_number, plain

if TYPE_CHECKING:
    from nb_mlops.core.runs import RunRow, RunsPage

__all__ = ["runs", "ui"]


@click.command()
@click.option(
    "-e", "--experiment", default=None, help="Experiment name (default: config, else latest)."
)
@click.option("-m", "--metric", default=None, help="Sort by this metric (largest first).")
@click.option(
    "-s",
    "--sort",
    default=None,
    help="Sort by params.K, tags.K, start_time, end_time, status or run_name instead.",
)
@click.option("--asc", is_flag=True, help="Smallest first.")
@click.option("-n", "--limit", type=click.IntRange(1, 50_000), default=50, show_default=True)
@click.option("--page-token", default=None, help="next_page_token of the previous page.")
@click.option(
    "-c",
    "--columns",
    "chosen",
    default=None,
    metavar="A,B,…",
    help="Parameters and metrics to show after run and status, in this order "
    "(e.g. C,accuracy; params.K and metrics.K also work; started, duration).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
def runs(
    experiment: str | None,
    metric: str | None,
    sort: str | None,
    asc: bool,
    limit: int,
    page_token: str | None,
    chosen: str | None,
    as_json: bool,
) -> None:
    """List one page of an experiment's runs: status, duration, params, metrics, UI link.

    The table fits the terminal: run name and status always show; then the sort metric, your
    own parameters (the notebook's `parameters` cell), your metrics, the duration, the start
    and autolog's metrics, as many as fit (the rest are named below the table). Parameters
    sklearn autolog added are hidden unless --columns names them. Only the page asked for is read, however many runs the experiment holds. With
    --json the output has the keys experiment, experiment_id, order_by, offset, limit,
    next_page_token, runs.

    Example: nb-mlops runs --metric accuracy --limit 10 --columns C,accuracy
    """
    from nb_mlops.core.errors import TrackingError
    from nb_mlops.core.runs import runs as read_page
    from nb_mlops.present.runs import sort_key_problem

    if metric and sort:
        raise click.UsageError("give --metric or --sort, not both")
    cfg = load_config()
    page = read_page(
        experiment,
        metric=metric,
        order_by=sort,
        ascending=asc,
        limit=limit,
        page_token=page_token,
        cfg=cfg,
    )
    problem = sort_key_problem(page)
    if problem:
        raise TrackingError(problem)
    if as_json:
        click.echo(json.dumps(page.to_dict(), indent=2, allow_nan=False))
        return
    _print_table(page, _split(chosen))


def _split(chosen: str | None) -> list[str] | None:
    if chosen is None:
        return None
    names = [name.strip() for name in chosen.split(",") if name.strip()]
    if not names:
        raise click.UsageError("--columns needs names, e.g. --columns C,accuracy")
    return names


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[RunRow], str]
    justify: Literal["left", "right"] = "left"


def _candidates(page: RunsPage, chosen: list[str] | None, narrow: bool) -> list[_Column]:
    """Every column that could follow run and status, most useful first."""
    from nb_mlops.present.runs import format_duration, format_started, ordered_metrics
    from nb_mlops.present.runs import param_groups as groups

    user, autolog = groups(page)
    metrics = ordered_metrics(page)
    both = set(user + autolog) & set(metrics)  # a key that is both: say which is which

    def param(key: str) -> _Column:
        header = f"params.{key}" if key in both else key
        return _Column(header, lambda row: plain(row.params.get(key, ""), 24))

    def metric(key: str) -> _Column:
        header = f"metrics.{key}" if key in both else key
        return _Column(header, lambda row: format_number(row.metrics.get(key)), "right")

    def started(row: RunRow) -> str:
        text = format_started(row)
        return text[5:16] if narrow else text  # MM-DD HH:MM when the terminal is narrow

    fixed = {
        "started": _Column("started (UTC)", started),
        "duration": _Column("duration", format_duration, "right"),
    }
    if chosen is not None:
        known = {**{f"params.{k}": param(k) for k in user + autolog}, **fixed}
        known.update({f"metrics.{k}": metric(k) for k in metrics})
        picked = []
        for name in chosen:
            column = known.get(name) or known.get(f"params.{name}") or known.get(f"metrics.{name}")
            if column is None:
                listed = ", ".join([*fixed, *(user + autolog), *metrics])
                raise click.UsageError(f"no column {name!r} on this page; known: {listed}")
            picked.append(column)
        return picked
    own = [m for m in metrics if not (m.startswith("training_") or m[:1].isupper())]
    sort_first = metrics[:1] if page.metric else []
    return [
        *[metric(k) for k in sort_first],
        *[param(k) for k in user],
        *[metric(k) for k in own if k not in sort_first],
        fixed["duration"],
        fixed["started"],
        *[metric(k) for k in metrics if k not in own and k not in sort_first],
    ]


def _names(headers: list[str], shown: int = 3) -> str:
    more = f", … {len(headers) - shown} more" if len(headers) > shown else ""
    return ", ".join(headers[:shown]) + more


def _print_table(page: RunsPage, chosen: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape

    from nb_mlops.present.runs import caption, param_groups

    console = Console(highlight=False)
    console.print(escape(plain(caption(page))))
    if not page.rows:
        return
    width = console.width
    narrow = width < 120
    candidates = _candidates(page, chosen, narrow)
    # add columns while the table still fits the terminal at their natural width: the run name
    # and status are never squeezed, and no header is cut
    shown: list[_Column] = []
    left_out: list[str] = []
    for column in candidates:
        if _width(console, page, [*shown, column], narrow) <= width:
            shown.append(column)
        else:
            left_out.append(column.header)
    console.print(_table(page, shown, narrow))
    notes = []
    if left_out:
        notes.append(f"too wide to show: {_names(left_out)}")
    hidden = param_groups(page)[1] if chosen is None else []
    if hidden:
        notes.append(f"autolog's parameters: {_names(hidden, 2)}")
    if notes:
        console.print(escape("; ".join(notes) + " (pick with --columns A,B,…)"))
    if page.next_page_token:
        console.print(f"next page: --page-token {page.next_page_token}")


def _table(page: RunsPage, shown: list[_Column], narrow: bool) -> Any:
    from rich import box
    from rich.markup import escape
    from rich.style import Style
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    table.add_column("run", no_wrap=True, min_width=3)
    table.add_column("status", no_wrap=True, min_width=8)
    for column in shown:
        table.add_column(
            escape(plain(column.header)),
            no_wrap=True,
            min_width=len(column.header),
            justify=column.justify,
        )
    for row in page.rows:
        name = Text(plain(row.name or row.run_id[:8], 20 if narrow else 32))
        name.stylize(Style(link=row.url))
        table.add_row(name, row.status, *[Text(c.cell(row)) for c in shown])
    return table


def _width(console: Any, page: RunsPage, shown: list[_Column], narrow: bool) -> int:
    from rich.measure import Measurement

    # measured unbounded: a measurement within the console's options is clamped to its width
    options = console.options.update(max_width=100_000)
    return int(Measurement.get(console, options, _table(page, shown, narrow)).maximum)


@click.command()
@click.option(
    "-p",
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port (default: the port of ui_url in the config, else 5000).",
)
def ui(port: int | None) -> None:
    """Start the MLflow UI on 127.0.0.1 on this project's store (Ctrl-C stops it).

    It shows every run, dataset input, model and registry alias nb_mlops recorded. With a team
    tracking server configured, it prints that server's address instead.

    Example: nb-mlops ui --port 5001
    """
    from nb_mlops.core.runs import ui_url
    from nb_mlops.core.store import ensure_store

    cfg = load_config()
    if cfg.tracking_uri.startswith(("http://", "https://")):
        click.echo(f"this project tracks to {cfg.tracking_uri}: open it in a browser")
        return
    base = urlsplit(ui_url(cfg))
    port = port or base.port or 5000
    # The schema is made here, under our lock, never by `mlflow ui`'s racy migrations.
    ensure_store(cfg)
    artifact_root = cfg.artifact_root
    if "://" not in artifact_root:
        Path(artifact_root).mkdir(parents=True, exist_ok=True)
        artifact_root = Path(artifact_root).resolve().as_uri()
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        cfg.tracking_uri,
        "--registry-store-uri",
        cfg.registry_uri,
        "--default-artifact-root",
        artifact_root,
        "--no-serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # One worker: a personal UI needs no more, and each worker costs an mlflow import (~2 s).
        "--workers",
        "1",
    ]
    click.echo(f"MLflow UI for {cfg.root} at http://127.0.0.1:{port}  (Ctrl-C to stop)")
    sys.stdout.flush()
    os.chdir(cfg.root)  # MLflow puts stray files (e.g. ./mlruns) in the cwd: keep them in the root
    # Become the MLflow server (exec): Ctrl-C and SIGTERM reach it directly, no orphan is left.
    os.execv(sys.executable, argv)
