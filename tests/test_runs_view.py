"""The runs view: widget sorting and paging against a real store; HTML that shows hostile text as text."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from runs_store import fill

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.runs import runs
from nb_mlops.core.store import client, experiment_id
from nb_mlops.present.runs import RunsTable, html_table, metric_svg, text_table
from nb_mlops.widgets.runs import RunsView

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "'\"><script>alert(1)</script>",
    "\x1b[31mred\x1b[0m\nsecond line",
]
ALLOWED_TAGS = {
    "div", "b", "table", "thead", "tbody", "tr", "th", "td", "a", "span", "i",
    "svg", "text", "line", "path", "circle", "title",
}  # fmt: skip


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.hrefs: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [name for name, _ in attrs]
        self.hrefs += [value or "" for name, value in attrs if name == "href"]


@pytest.fixture
def hostile(project: Path) -> Config:
    """Runs whose name, params and tags are hostile strings."""
    cfg = load_config()
    mlflow_client = client(cfg)
    exp_id = experiment_id(cfg, "exp")
    for index, text in enumerate(HOSTILE):
        run = mlflow_client.create_run(exp_id, run_name=text, start_time=1_700_000_000_000 + index)
        mlflow_client.log_batch(
            run.info.run_id,
            metrics=[Metric("acc", 0.5 + index / 10, 0, 0)],
            params=[Param("p", text)],
            tags=[RunTag("note", text)],
        )
        mlflow_client.set_terminated(run.info.run_id)
    return cfg


def test_hostile_strings_are_text_in_html_svg_and_terminal(hostile: Config) -> None:
    # Given runs named and parametrised with markup and escape sequences
    page = runs("exp", metric="acc", cfg=hostile)
    page_html = html_table(page)
    # When the HTML is parsed, only our own tags and attributes exist, and links are http(s)
    parsed = _Tags()
    parsed.feed(page_html)
    assert parsed.tags <= ALLOWED_TAGS
    assert not [a for a in parsed.attrs if a.startswith("on")]
    assert parsed.hrefs and all(h.startswith("http://127.0.0.1:5000/#/") for h in parsed.hrefs)
    assert "&lt;img src=x onerror=alert(1)&gt;" in page_html
    # And the terminal table has no control characters (no escape sequences, no broken lines)
    text = text_table(page)
    assert "\x1b" not in text and "?[31mred?[0m?second line" in text
    assert len(text.splitlines()) == 1 + 1 + len(HOSTILE) + 1


def test_widget_sorts_and_pages_through_the_store(project: Path) -> None:
    # Given 30 runs and a view of 8 per page sorted by acc
    cfg = load_config()
    fill(cfg, "exp", 30)
    view = RunsView(runs("exp", metric="acc", limit=8, cfg=cfg), cfg=cfg)
    assert view.sort.value == "metrics.acc" and view.prev.disabled and not view.next.disabled
    first = [row.run_id for row in view.page]
    # When the user pages forward and back
    view.next.click()
    assert view.page.offset == 8 and not view.prev.disabled
    assert [r.run_id for r in view.page] == [
        r.run_id for r in runs("exp", metric="acc", limit=8, page_token=view._tokens[-1], cfg=cfg)
    ]
    view.prev.click()
    assert [row.run_id for row in view.page] == first
    # When they sort by a param, ascending: the store is asked again, from the first page
    view.sort.value = "params.lr"
    view.ascending.value = True
    expected = runs("exp", order_by="params.lr", ascending=True, limit=8, cfg=cfg)
    assert [r.run_id for r in view.page] == [r.run_id for r in expected]
    assert view.page.offset == 0 and "params.lr ▲" in view.table.value
    # When they plot another metric, the plot follows and the table stays
    table = view.table.value
    view.plot_choice.value = "loss"
    assert "loss across" in view.plot.value and view.table.value == table
    # And the last page disables "next"
    while not view.next.disabled:
        view.next.click()
    assert view.page.next_page_token is None and view.page.offset == 24


def test_widget_bundle_carries_html_and_text_fallbacks(project: Path) -> None:
    cfg = load_config()
    fill(cfg, "exp", 5)
    bundle = RunsView(runs("exp", metric="acc", cfg=cfg), cfg=cfg)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/html"].startswith("<div class='nb-mlops-runs'>")
    assert bundle["text/plain"].startswith("experiment 'exp': runs 1–5, by acc descending")
    assert (
        RunsTable(runs("exp", cfg=cfg))
        ._repr_mimebundle_()["text/plain"]
        .startswith("experiment 'exp': runs 1–5, newest first")
    )


def test_empty_and_missing_experiments_render(project: Path) -> None:
    page = runs(cfg=load_config())
    assert "no runs yet" in html_table(page) and "no runs yet" in text_table(page)


def test_plot_skips_non_finite_values(project: Path) -> None:
    cfg = load_config()
    mlflow_client = client(cfg)
    exp_id = experiment_id(cfg, "exp")
    for value in (0.1, math.nan, math.inf, 0.3):
        run = mlflow_client.create_run(exp_id)
        mlflow_client.log_metric(run.info.run_id, "acc", value)
        mlflow_client.set_terminated(run.info.run_id)
    svg = metric_svg(runs("exp", cfg=cfg), "acc")
    assert "acc across 2 runs" in svg and svg.count("<circle") == 2
    assert "no finite values of nope" in metric_svg(runs("exp", cfg=cfg), "nope")
