"""`nb_mlops.runs`: paged, sorted pages of runs, equal to MLflow's own `search_runs`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from runs_store import Filled, fill

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import ConfigError, TrackingError
from nb_mlops.core.runs import (
    ExperimentNotFound,
    RunsPage,
    _page_mlflow,
    parse_order_by,
    run_url,
    runs,
    ui_url,
)
from nb_mlops.core.store import client, experiment_id

ORDERS = [
    (None, False),
    ("metrics.acc", False),
    ("metrics.acc", True),
    ("acc", False),
    ("metrics.loss", True),
    ("metrics.never_logged", False),
    ("params.lr", True),
    ("params.lr", False),
    ("tags.team", False),
    ("start_time", True),
    ("end_time", False),
    ("status", True),
    ("run_name", False),
]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Filled]]:
    """One store for the module: 120 runs in `exp`, 5 in `other` (never shown with `exp`)."""
    root = tmp_path_factory.mktemp("runs") / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "NB_MLOPS_TRACKING_URI", "NB_MLOPS_ROOT"):
            mp.delenv(name, raising=False)
        cfg = load_config(root)
        data = fill(cfg, "exp", 120)
        fill(cfg, "other", 5, seed=3, base=1_800_000_000_000)  # the latest runs
    yield cfg, data


def _mlflow_pages(cfg: Config, exp_id: str, clause: str | None, limit: int) -> list[list[str]]:
    pages, token = [], None
    while True:
        found = client(cfg).search_runs(
            [exp_id], max_results=limit, order_by=[clause] if clause else None, page_token=token
        )
        pages.append([run.info.run_id for run in found])
        token = found.token
        if not token:
            return pages


def _our_pages(cfg: Config, spec: str | None, ascending: bool, limit: int) -> list[RunsPage]:
    pages, token = [], None
    while True:
        page = runs(
            "exp", order_by=spec, ascending=ascending, limit=limit, page_token=token, cfg=cfg
        )
        assert page.source == "sql"
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


@pytest.mark.parametrize(("spec", "ascending"), ORDERS)
def test_every_page_equals_mlflow_search_runs(
    filled: tuple[Config, Filled], spec: str | None, ascending: bool
) -> None:
    # Given 120 runs with ties, NaN, infinities, missing keys, deleted and RUNNING runs
    cfg, data = filled
    order = parse_order_by(spec, ascending)
    clause = order.mlflow_clause() if order else None
    # When both page through the experiment 17 runs at a time
    theirs = _mlflow_pages(cfg, data.experiment_id, clause, 17)
    ours = _our_pages(cfg, spec, ascending, 17)
    # Then the pages hold the same runs in the same order, and no deleted run
    assert [[row.run_id for row in page] for page in ours] == theirs
    shown = {row.run_id for page in ours for row in page}
    assert shown == set(data.run_ids) and not shown & set(data.deleted)


def test_page_contents_equal_mlflow_runs(filled: tuple[Config, Filled]) -> None:
    # Given the first page by accuracy
    cfg, data = filled
    page = runs("exp", metric="acc", limit=40, cfg=cfg)
    theirs = {
        run.info.run_id: run
        for run in client(cfg).search_runs(
            [data.experiment_id], max_results=40, order_by=["metrics.`acc` DESC"]
        )
    }
    # Then each row carries MLflow's params, metrics (NaN included), tags, status and times
    for row in page:
        run = theirs[row.run_id]
        assert row.params == run.data.params
        assert row.tags == run.data.tags
        assert row.status == run.info.status and row.name == run.info.run_name
        assert (row.start_time, row.end_time) == (run.info.start_time, run.info.end_time)
        assert row.metrics.keys() == run.data.metrics.keys()
        for key, value in run.data.metrics.items():
            assert row.metrics[key] == value or (math.isnan(value) and math.isnan(row.metrics[key]))
        assert (
            row.url == f"http://127.0.0.1:5000/#/experiments/{data.experiment_id}/runs/{row.run_id}"
        )
    # And NaN sorts after every number, runs without the metric after NaN (MLflow's order)
    ranks = [
        2 if "acc" not in r.metrics else 1 if math.isnan(r.metrics["acc"]) else 0
        for page in _our_pages(cfg, "acc", False, 50)
        for r in page
    ]
    assert ranks == sorted(ranks)


def test_mlflow_path_gives_the_same_page_as_the_sql_path(filled: tuple[Config, Filled]) -> None:
    # Given the store read directly and through MlflowClient (the path a team server takes)
    cfg, _ = filled
    token = None
    for _ in range(3):
        ours = runs("exp", metric="acc", limit=25, page_token=token, cfg=cfg)
        theirs = _page_mlflow(cfg, "exp", True, ours.order, 25, ours.offset, token)
        # Then both give the same page and the same next-page token
        assert theirs.source == "mlflow"
        assert json.dumps(theirs.to_dict()) == json.dumps(ours.to_dict())
        token = ours.next_page_token


def test_sort_key_no_run_has_is_reported(filled: tuple[Config, Filled]) -> None:
    cfg, _ = filled
    assert runs("exp", metric="never_logged", limit=5, cfg=cfg).sort_key_missing
    assert not runs("exp", metric="acc", limit=5, cfg=cfg).sort_key_missing


def test_default_experiment_is_the_latest_runs(filled: tuple[Config, Filled]) -> None:
    # Given no experiment named and none configured: the experiment of the latest run is shown
    cfg, _ = filled
    page = runs(limit=3, cfg=cfg)
    assert page.experiment == "other" and len(page) == 3


def test_unknown_experiment_names_the_known_ones(filled: tuple[Config, Filled]) -> None:
    cfg, _ = filled
    with pytest.raises(ExperimentNotFound, match=r"'nope' not found; known experiments: .*exp"):
        runs("nope", cfg=cfg)


def test_configured_experiment_without_runs_is_an_empty_page(project: Path) -> None:
    # Given a project whose configured experiment has no run yet, and no store at all
    (project / "pyproject.toml").write_text('[tool.nb_mlops]\nexperiment = "fresh"\n')
    page = runs()
    # Then the page is empty and looking did not create a store
    assert page.experiment == "fresh" and page.experiment_id is None and len(page) == 0
    assert not (project / ".nb_mlops").exists()
    with pytest.raises(ExperimentNotFound, match="'fresh' not found; known experiments: none yet"):
        runs("fresh")
    assert len(runs("fresh", missing_ok=True)) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be an integer from 1 to 50000, got 0"),
        ({"limit": 50_001}, "limit must be an integer"),
        ({"limit": True}, "limit must be an integer"),
        ({"page_token": "not-a-token"}, "invalid page token 'not-a-token'"),
        ({"page_token": "eyJvZmZzZXQiOiAtMX0="}, "invalid page token"),  # {"offset": -1}
        ({"metric": "acc", "order_by": "params.lr"}, "either metric or order_by"),
        ({"order_by": "attributes.color"}, "cannot sort by attribute 'color'"),
        ({"metric": "a`b"}, "without backticks"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    project: Path, kwargs: dict[str, object], message: str
) -> None:
    cfg = load_config()
    experiment_id(cfg, "exp")
    with pytest.raises(TrackingError, match=message) as info:
        runs("exp", cfg=cfg, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_ui_url_comes_from_config_and_must_be_http(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.nb_mlops]\nui_url = "https://mlflow.example/"\n')
    cfg = load_config()
    run = client(cfg).create_run(experiment_id(cfg, "exp"))
    client(cfg).set_terminated(run.info.run_id)
    (row,) = runs("exp", cfg=cfg)
    assert row.url == run_url("https://mlflow.example", row.experiment_id, row.run_id)
    assert row.url.startswith("https://mlflow.example/#/experiments/")
    (project / "pyproject.toml").write_text('[tool.nb_mlops]\nui_url = "javascript:alert(1)"\n')
    with pytest.raises(ConfigError, match="ui_url must be an http"):
        runs("exp")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("", "http://127.0.0.1:5000"),
        ('tracking_uri = "https://mlflow.team.example/"\n', "https://mlflow.team.example"),
        ('tracking_uri = "http://ci:s3cret@10.0.0.5:5000"\n', "http://10.0.0.5:5000"),
        (
            'tracking_uri = "https://mlflow.team.example"\nui_url = "https://ui.example"\n',
            "https://ui.example",
        ),
    ],
)
def test_ui_url_defaults_to_the_team_server_that_serves_the_ui(
    project: Path, setting: str, expected: str
) -> None:
    (project / "pyproject.toml").write_text(f"[tool.nb_mlops]\n{setting}")
    assert ui_url(load_config()) == expected


def test_sql_path_does_not_import_mlflow(filled: tuple[Config, Filled]) -> None:
    # Given a populated embedded store, a fresh interpreter reads a sorted page
    cfg, _ = filled
    code = (
        "import sys; from nb_mlops.core.runs import runs; "
        "p = runs('exp', metric='acc', limit=10); "
        "print(len(p), p.source, 'mlflow' in sys.modules, 'sqlalchemy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cfg.root, capture_output=True, text=True, check=True
    )
    # Then neither mlflow nor sqlalchemy was imported to do it
    assert out.stdout.split() == ["10", "sql", "False", "False"]
