"""`nb-mlops runs` fits the terminal: run name and status always whole, no header cut, the user's
parameters before autolog's (hidden), `--columns` to choose, mistakes exit non-zero. The runs are
real tracked fits (a `parameters` cell, sklearn autolog) on a real store."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nb_mlops.cli import main
from nb_mlops.core import session, tracking
from nb_mlops.core.config import load_config
from nb_mlops.core.store import client

PARAMS = ("n_estimators", "max_depth", "seed")


@pytest.fixture(scope="module")
def wine_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tracked random forests of notebook `wine.ipynb`, with a parameters cell (made once
    for the module: the tests only read them)."""
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    root = tmp_path_factory.mktemp("runs-columns")
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n\n[tool.nb_mlops]\n')
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("n_estimators = 10\nmax_depth = 3\nseed = 0")
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    nbformat.write(nb, str(root / "wine.ipynb"))
    X, y = load_wine(return_X_y=True)
    with pytest.MonkeyPatch.context() as patch:
        # module-scoped: runs before the per-test clean environment of conftest, so clean it here
        for name in list(os.environ):
            if name.startswith(("NB_MLOPS_", "MLFLOW_")):
                patch.delenv(name)
        patch.chdir(root)
        patch.setenv("NB_MLOPS_NOTEBOOK", str(root / "wine.ipynb"))
        session.clear()
        for i, (n, depth) in enumerate([(5, 2), (8, 3), (3, None)]):
            namespace: dict[str, Any] = {"n_estimators": n, "max_depth": depth, "seed": 0}
            namespace.update(X=X, y=y, RF=RandomForestClassifier)
            tracking.bind_kernel(namespace)
            with tracking.track(name=f"random-forest-with-a-rather-long-name-{i}"):
                exec(  # noqa: S102 - the test's own cell
                    "model = RF(n_estimators=n_estimators, max_depth=max_depth, "
                    "random_state=seed).fit(X, y)\nimport nb_mlops\n"
                    "nb_mlops.log(accuracy=model.score(X, y))",
                    namespace,
                )
        tracking.flush()
        tracking.bind_kernel(None)
    return root


@pytest.fixture
def tracked(wine_project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(wine_project)
    return wine_project


def _cli(
    argv: list[str], width: int, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", str(width))
    code = main(["runs", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tracking_names_the_users_parameters_apart_from_autologs(tracked: Path) -> None:
    run = client(load_config()).search_runs(
        [client(load_config()).get_experiment_by_name("wine").experiment_id]
    )[0]
    assert json.loads(run.data.tags["nb_mlops.params"]) == list(PARAMS)
    assert {"bootstrap", "ccp_alpha"} <= set(run.data.params)  # autolog's, not the user's


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_the_table_fits_the_terminal_with_name_status_and_whole_headers(
    tracked: Path, width: int, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    code, out, _ = _cli([], width, capsys, monkeypatch)
    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), out
    header = next(line for line in lines if line.startswith("run "))
    headers = re.split(r"\s{2,}", header.strip())
    # whole headers only, the user's parameters before anything autolog added
    assert headers[:2] == ["run", "status"]
    assert not any("…" in h for h in headers)
    assert not {"bootstrap", "ccp_alpha", "criterion"} & set(headers)
    shown = [h for h in headers if h in PARAMS]
    assert shown == [p for p in PARAMS if p in headers]  # in the parameters cell's order
    # every row shows its status whole and a readable name
    rows = [line for line in lines if line.startswith("random-forest")]
    assert len(rows) == 3
    assert all("FINISHED" in row and row.startswith("random-forest-with") for row in rows)
    assert "autolog's parameters: bootstrap" in out
    if width >= 80:
        assert headers[2:5] == list(PARAMS)


def test_columns_chooses_and_orders_what_follows_run_and_status(
    tracked: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    code, out, _ = _cli(
        ["-m", "accuracy", "-c", "bootstrap,max_depth,accuracy"], 80, capsys, monkeypatch
    )
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("run "))
    assert re.split(r"\s{2,}", header.strip()) == [
        "run",
        "status",
        "bootstrap",
        "max_depth",
        "accuracy",
    ]
    assert "autolog's parameters" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-m", "nosuch"], "error: no run of experiment 'wine' has 'nosuch'; known: Random"),
        (["-s", "params.nosuch"], "error: no run of experiment 'wine' has 'params.nosuch'"),
        (["-c", "nosuch"], "no column 'nosuch' on this page; known: started, duration"),
        (["-c", ","], "--columns needs names"),
    ],
)
def test_mistakes_exit_non_zero_as_the_magic_raises(
    tracked: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: Any,
    argv: list[str],
    message: str,
) -> None:
    code, _, err = _cli(argv, 80, capsys, monkeypatch)
    assert code != 0
    assert message in err
    assert os.environ["COLUMNS"] == "80"
