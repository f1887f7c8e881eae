"""`nb-mlops runs` (one page of an experiment's runs) and `nb-mlops ui` (the MLflow UI on our store).

`runs` reads the embedded store directly (no mlflow import), so it answers in a fraction of a second.
`ui` starts `mlflow ui` on 127.0.0.1 with the configured backend, registry and artifact root.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from nb_mlops.core.config import load_config

if TYPE_CHECKING:
    from nb_mlops.core.runs import RunsPage

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
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
def runs(
    experiment: str | None,
    metric: str | None,
    sort: str | None,
    asc: bool,
    limit: int,
    page_token: str | None,
    as_json: bool,
) -> None:
    """List one page of an experiment's runs: status, duration, params, metrics, UI link.

    Only the page asked for is read, however many runs the experiment holds. With --json the
    output has the keys experiment, experiment_id, order_by, offset, limit, next_page_token, runs.

    Example: nb-mlops runs --metric accuracy --limit 10
    """
    from nb_mlops.core.runs import runs as read_page

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
    if as_json:
        click.echo(json.dumps(page.to_dict(), indent=2, allow_nan=False))
        return
    _print_table(page)


def _print_table(page: RunsPage) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from nb_mlops.widgets.runs import (
        caption,
        columns,
        format_duration,
        format_number,
        format_started,
        plain,
    )

    console = Console(highlight=False)
    console.print(escape(plain(caption(page))))
    if not page.rows:
        return
    params, metrics = columns(page)
    table = Table(show_edge=False, pad_edge=False)
    for name in ["run", "status", "started (UTC)", "duration", *metrics]:
        table.add_column(escape(plain(name)), no_wrap=True)
    for name in params[:4]:
        table.add_column(escape(plain(f"params.{name}")), no_wrap=True)
    for row in page.rows:
        link = f"[link={escape(row.url)}]{escape(plain(row.name or row.run_id[:8], 32))}[/link]"
        table.add_row(
            link,
            row.status,
            format_started(row),
            format_duration(row),
            *[format_number(row.metrics.get(m)) for m in metrics],
            *[escape(plain(row.params.get(p, ""), 24)) for p in params[:4]],
        )
    console.print(table)
    if page.next_page_token:
        console.print(f"next page: --page-token {page.next_page_token}")


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
