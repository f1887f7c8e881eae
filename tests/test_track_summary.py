"""`%%track` ends with one line: run name, id, status, model state and a link to the run's page.

Terminal IPython (no kernel) prints it as text; a kernel shows a compact widget whose model state
follows the background writer, carrying the same line as HTML and text for frontends without
widgets (the model matrix checks that output in a real kernel)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from nb_mlops.widgets.run_summary import RunSummary

SCRIPT = """
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "nb_mlops")
ip.run_cell("import numpy as np\\nX = np.arange(40.0).reshape(20, 2)\\ny = [0, 1] * 10")
ip.run_cell("%%track -n fit\\nfrom sklearn.linear_model import LogisticRegression\\n"
            "model = LogisticRegression().fit(X, y)")
ip.run_cell("%%track -n plain --no-autolog\\nx = 1")
ip.run_cell("%%track -n boom\\nraise ValueError('boom')")
import nb_mlops.core.tracking as tracking
tracking.flush()
"""

LINE = re.compile(
    r"^run (?P<name>\S+) \((?P<id>[0-9a-f]{12})\) · (?P<status>[A-Z]+) · model: (?P<model>[^·]+)"
    r" · http://127\.0\.0\.1:5000/#/experiments/(?P<exp>\d+)/runs/(?P<run>[0-9a-f]{32})$"
)


def test_terminal_ipython_prints_one_line_per_tracked_cell(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = [m.groupdict() for m in map(LINE.match, done.stdout.splitlines()) if m]
    assert [(f["name"], f["status"]) for f in found] == [
        ("fit", "FINISHED"),
        ("plain", "FINISHED"),
        ("boom", "FAILED"),
    ], done.stdout
    assert found[0]["model"].strip() in ("pending", "logged")
    assert found[1]["model"].strip() == "none" and found[2]["model"].strip() == "none"
    assert all(f["run"].startswith(f["id"]) for f in found)
    assert "ValueError" in done.stdout and "boom" in done.stdout  # the traceback still shows


def test_the_widget_follows_the_models_state_and_escapes_user_text() -> None:
    summary = RunSummary("<b>x</b>", "a" * 32, "FINISHED", "http://h/#/experiments/1/runs/aaa")
    widget = summary.widget()
    summary.update({"model": "pending"})
    assert "model: pending" in widget.value and "&lt;b&gt;x&lt;/b&gt;" in widget.value
    summary.update({"model": "logged"})
    assert "model: logged" in widget.value
    bundle = summary._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("run <b>x</b> (aaaaaaaaaaaa) · FINISHED · model: logged")
    summary.update({"scaler": "logged", "model": "not logged: class X is defined in the notebook"})
    assert summary.model_text() == (
        "models: scaler logged, model not logged: class X is defined in the notebook"
    )
