"""`%mlops` in a real kernel (papermill) after real `%%track` cells, and its usage errors in-process."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from mlflow.tracking import MlflowClient
from nbutil import execute, new_notebook
from runs_store import fill

from nb_mlops.core.config import load_config
from nb_mlops.magics.mlops import MlopsMagics

HOSTILE = "<img/src=x/onerror=alert(1)>"  # no spaces: IPython keeps quotes in magic args
WIDGET = "application/vnd.jupyter.widget-view+json"


def _outputs(nb: Any, index: int) -> list[Any]:
    """Outputs of the notebook's cell `index` as written (papermill inserts a parameters cell)."""
    (cell,) = [c for c in nb.cells if c.get("id") == f"cell-{index}"]
    return list(cell.outputs)


def _text(nb: Any, index: int) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb, index) if o.output_type == "stream")


def _display(nb: Any, index: int) -> dict[str, Any]:
    shown = [o.data for o in _outputs(nb, index) if o.output_type == "display_data"]
    assert len(shown) == 1, _outputs(nb, index)
    return dict(shown[0])


def test_mlops_in_a_kernel_shows_status_runs_and_switches_experiment(project: Path) -> None:
    # Given a notebook that tracks two runs (one with a hostile name), then uses every %mlops form
    nb = new_notebook(
        project / "mlops_nb.ipynb",
        [
            "%load_ext nb_mlops",  # 0
            ("C = 1.0", ["parameters"]),  # 1
            "import nb_mlops",  # 2
            f"%%track -n {HOSTILE}\nnb_mlops.log(acc=0.7, loss=0.3)",  # 3
            "%%track -n second -t team=blue\nnb_mlops.log(acc=0.9, loss=0.1)",  # 4
            "%mlops",  # 5
            "%mlops runs --metric acc",  # 6
            "%mlops experiment 'other'",  # 7 (quotes are taken off)
            "%%track -n in-other\nnb_mlops.log(acc=0.5)",  # 8
            "%mlops runs --limit 5",  # 9
            ("%mlops runs --metric nope", ["raises-exception"]),  # 10
            "%mlops config",  # 11
        ],
    )
    out = project / "mlops_nb.out.ipynb"
    # When papermill runs it in a fresh kernel
    result = execute(
        nb,
        output=out,
        parameters={"PAPERMILL_INPUT_PATH": str(nb), "PAPERMILL_OUTPUT_PATH": str(out)},
    )
    # Then the store holds two runs in the notebook's experiment and one in `other`
    client = MlflowClient(load_config().tracking_uri)
    mine = client.search_runs([client.get_experiment_by_name("mlops_nb").experiment_id])
    other = client.search_runs([client.get_experiment_by_name("other").experiment_id])
    assert sorted(r.info.run_name for r in mine) == sorted([HOSTILE, "second"])
    assert [r.info.run_name for r in other] == ["in-other"]
    second = next(r for r in mine if r.info.run_name == "second")

    # `%mlops` names the store, the experiment, the notebook and the last run with its metrics
    status = _text(result, 5)
    assert f"store       {load_config().tracking_uri}  (embedded)" in status
    assert "experiment  mlops_nb" in status
    assert f"notebook    {nb}" in status
    assert "last run    second [FINISHED" in status and "acc=0.9" in status
    assert second.info.run_id in status

    # `%mlops runs --metric acc`: a widget, plus HTML and text fallbacks, best run first
    shown = _display(result, 6)
    assert WIDGET in shown
    page_html, page_text = shown["text/html"], shown["text/plain"]
    assert page_html.index("second") < page_html.index(html.escape(HOSTILE, quote=True))
    assert "<img" not in page_html and html.escape(HOSTILE, quote=True) in page_html
    assert f"/#/experiments/{second.info.experiment_id}/runs/{second.info.run_id}" in page_html
    assert "<svg" in page_html and "acc across 2 runs" in page_html
    assert "by acc descending" in page_text and page_text.index("second") < page_text.index("img")

    # `%mlops experiment other` moves the next runs; `%mlops runs` follows it
    assert _text(result, 7).strip() == "experiment: other"
    assert "experiment 'other': runs 1–1, newest first" in _display(result, 9)["text/plain"]

    # A mistake is a one-line UsageError naming what is known (IPython prints it, no traceback)
    assert _text(result, 10).strip() == (
        "UsageError: no run of experiment 'other' has 'nope'; known: acc"
    )

    # `%mlops config` prints the resolved configuration and the UI address
    config = _text(result, 11)
    assert (
        f"root           {project}" in config and "ui_url         http://127.0.0.1:5000" in config
    )


@pytest.fixture
def shell(project: Path) -> InteractiveShell:
    """A terminal-style IPython (no kernel, so no widgets) with `%mlops` and a filled store."""
    fill(load_config(), "exp", 12)
    ip = InteractiveShell.instance()
    ip.register_magics(MlopsMagics)
    return ip


def test_help_has_an_example() -> None:
    doc = MlopsMagics.mlops.__doc__ or ""
    assert "In [1]: %mlops" in doc and "%mlops runs --metric" in doc


def test_terminal_shell_gets_the_text_and_html_table(shell: InteractiveShell) -> None:
    with capture_output() as captured:
        shell.run_line_magic("mlops", "runs -e exp --metric acc --limit 4")
    (shown,) = captured.outputs
    assert WIDGET not in shown.data
    assert shown.data["text/plain"].startswith("experiment 'exp': runs 1–4, by acc descending")
    assert "&lt;img" in shown.data["text/html"] or "<img" not in shown.data["text/html"]


def test_notebook_experiment_without_runs_is_an_empty_view(shell: InteractiveShell) -> None:
    # Given no tracked run yet in this session's experiment (no notebook: the root folder's name)
    with capture_output() as captured:
        shell.run_line_magic("mlops", "runs")
    (shown,) = captured.outputs
    assert shown.data["text/plain"] == "experiment 'project': no runs yet"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("bogus", "unknown %mlops command 'bogus'; use one of: status, experiment, config, runs"),
        ("config --metric acc", "--metric: options of `%mlops runs` only"),
        ("status --limit 3", "--limit: options of `%mlops runs` only"),
        ("config extra", "unexpected 'extra': only `%mlops experiment NAME` takes a name"),
        ("runs -e exp --metric acc --sort status", "give --metric or --sort, not both"),
        ("runs -e nope", "experiment 'nope' not found; known experiments: Default, exp"),
        ("runs -e exp --limit 0", "limit must be an integer from 1 to 50000, got 0"),
        ("runs -e exp --sort attributes.colour", "cannot sort by attribute 'colour'"),
        ("runs -e exp --metric nope", "no run of experiment 'exp' has 'nope'; known: acc, loss"),
        ("runs --limit many", "invalid int value: 'many'"),
    ],
)
def test_mistakes_raise_one_line_usage_errors(
    shell: InteractiveShell, line: str, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("mlops", line)
    assert message in str(info.value) and "\n" not in str(info.value).strip()
