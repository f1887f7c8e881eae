"""`%score` and `%monitor` in a real kernel and in a terminal shell, and the monitoring view."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from monitor_helpers import clean_environment, make_champion, make_frame
from nbutil import execute, new_notebook

import nb_mlops
from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.data import snapshot
from nb_mlops.magics.monitor import MonitorMagics
from nb_mlops.widgets.monitor import MonitorView

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("faces")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.nb_mlops]\n\n[tool.nb_mlops.monitor]\nlabel = "target"\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp)
        mp.chdir(root)
        make_champion(make_frame(3_000, seed=0))
        snapshot(make_frame(3_000, shift=0.8, share=0.7, seed=1), "batch", wait=True)
        yield root


@pytest.fixture
def here(champion: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(champion)
    return champion


@pytest.fixture
def shell(here: Path) -> InteractiveShell:
    """A terminal-style IPython (no kernel, so no widgets) with the monitoring magics."""
    ip = InteractiveShell.instance()
    ip.register_magics(MonitorMagics)
    return ip


def test_score_and_monitor_magics_in_a_real_kernel(here: Path) -> None:
    # Given a notebook that scores a batch and checks the champion on it
    notebook = new_notebook(
        here / "watch.ipynb",
        [
            "%load_ext nb_mlops",
            "preds = %score churn --data batch --out scored\nprint(len(preds), list(preds.columns))",
            "%monitor churn --data batch",
            "import nb_mlops\nprint(nb_mlops.monitor('churn', data='batch', act=False).verdict)",
        ],
    )
    # When papermill runs it in a fresh kernel
    out = execute(notebook)
    cells = out.cells
    # Then %score printed its summary and returned the predictions
    printed = "".join(o.get("text", "") for o in cells[1].outputs)
    assert printed.startswith("SCORED: 3,000 rows of batch@v1 with churn v1 → scored@v1")
    assert "3000 ['prediction']" in printed
    # And %monitor showed the monitoring view, with the check as text for non-widget readers
    (shown,) = [o for o in cells[2].outputs if o.get("output_type") == "display_data"]
    assert WIDGET in shown["data"]
    assert shown["data"]["text/plain"].startswith("DRIFT: churn v1 on batch@v1")
    assert "".join(cells[3].outputs[0]["text"]).strip() == "drift"
    # And the store holds the kernel's scoring run and both checks
    client = store.client(load_config())
    experiments = [e.experiment_id for e in client.search_experiments()]
    modes = [r.data.tags.get("nb_mlops.mode") for r in client.search_runs(experiments)]
    assert modes.count("monitor") >= 2 and modes.count("score") >= 1


def test_monitor_in_a_terminal_shell_shows_the_check_as_text(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("monitor", "churn --data batch --no-act")
    out = capsys.readouterr().out
    assert out.startswith("DRIFT: churn v1 on batch@v1")
    assert "x        numeric      DRIFT" in out


def test_magic_mistakes_are_one_line_usage_errors(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="model 'ghost' has no alias @champion"):
        shell.run_line_magic("monitor", "ghost --data batch")
    with pytest.raises(UsageError, match="no snapshot named 'nothing'"):
        shell.run_line_magic("score", "churn --data nothing")
    with pytest.raises(UsageError, match="give a model"):
        shell.run_line_magic("monitor", "--data batch")
    with pytest.raises(UsageError):
        shell.run_line_magic("monitor", "churn")  # --data is required
    assert "Example" in (MonitorMagics.monitor.__doc__ or "")
    assert "Example" in (MonitorMagics.score.__doc__ or "")


def test_the_view_lists_drifted_features_first_and_escapes_their_names(here: Path) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    base = make_frame(2_000, seed=0).drop(columns=["target"])
    snapshot(base.rename(columns={"y": hostile}), "hostile-ref", wait=True)
    moved = make_frame(2_000, seed=3).drop(columns=["target"]).rename(columns={"y": hostile})
    moved[hostile] = moved[hostile] * 3
    snapshot(moved, "hostile-cur", wait=True)
    result = nb_mlops.monitor("churn", data="hostile-cur", reference="hostile-ref@v1", act=False)
    view = MonitorView(result)
    options = [value for _, value in view.feature.options]
    assert options[0] == hostile and result.drift.drifted == [hostile]
    assert (
        hostile not in view.table.value and "&lt;img src=x onerror=alert(1)&gt;" in view.table.value
    )
    assert hostile not in view.plot.value and "<svg" in view.plot.value
    view.feature.value = "k"
    assert "aria-label='k'" in view.plot.value
    bundle = view._repr_mimebundle_()
    assert WIDGET in bundle and bundle["text/plain"].startswith("OK: churn v1")
    assert "<svg" in result._repr_mimebundle_()["text/html"]
