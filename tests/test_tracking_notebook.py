"""`%%track` in a real kernel (papermill), with the SQLite store inspected afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow.tracking import MlflowClient
from nbutil import execute, new_notebook


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / '.nb_mlops' / 'mlflow.db'}")


def _artifacts(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


# right after `%load_ext` (one assignment cell between): mlflow is still being imported by the
# warm-up thread when this cell needs autolog; two threads importing mlflow must not collide
TRAIN = """%%track -n fit -t team=churn
import numpy as np
import nb_mlops, nb_mlops.core.tracking
rng = np.random.RandomState(0)
X = rng.randn(300, 5)
y = (X[:, 0] > 0).astype(int)
from sklearn.linear_model import LogisticRegression
model = LogisticRegression(C=C, max_iter=max_iter).fit(X, y)
for i in range(500):
    nb_mlops.log(loss=1.0 / (i + 1))
nb_mlops.log(accuracy=model.score(X, y))
"""

FAILS = """try:
    get_ipython().run_cell_magic("track", "-n boom", "x = 1\\nraise ValueError('boom 42')")
except ValueError as exc:
    caught = str(exc)
assert caught == "boom 42"
try:
    get_ipython().run_cell_magic("track", "-n stop --no-autolog", "raise KeyboardInterrupt")
except KeyboardInterrupt:
    interrupted = True
import mlflow
assert mlflow.active_run() is None and nb_mlops.core.tracking.active_run_id() is None
"""


def test_tracked_cells_record_params_metrics_model_notebook_and_failures(project: Path) -> None:
    # Given a notebook with a parameters cell, a tracked sklearn fit, and failing tracked cells
    nb = new_notebook(
        project / "churn.ipynb",
        [
            "%load_ext nb_mlops",
            ("C = 1.0\nmax_iter = 200\nlabel = 'baseline'", ["parameters"]),
            TRAIN,
            "X[:] = 0  # changed in place after the fit: the deferred metrics used a copy",
            "outside = None\ntry:\n    nb_mlops.log(x=1)\nexcept nb_mlops.NbMlopsError as exc:\n"
            "    outside = str(exc)\nassert '%%track' in outside",
            FAILS,
        ],
    )
    out = project / "churn.out.ipynb"
    # When papermill runs it with an injected parameter and --inject-paths' variables
    execute(
        nb,
        output=out,
        parameters={"C": 0.5, "PAPERMILL_INPUT_PATH": str(nb), "PAPERMILL_OUTPUT_PATH": str(out)},
    )
    # Then the store holds the runs, in the notebook's experiment (its file stem)
    client = _client(project)
    exp = client.get_experiment_by_name("churn")
    assert exp is not None and exp.artifact_location.startswith((project / ".nb_mlops").as_uri())
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"fit", "boom", "stop"}

    fit = runs["fit"]
    assert fit.info.status == "FINISHED"
    # params: papermill's injected value wins over the parameters cell
    assert fit.data.params["C"] == "0.5"
    assert fit.data.params["max_iter"] == "200" and fit.data.params["label"] == "baseline"
    # metrics: explicit log (every point persisted) and sklearn autolog
    assert len(client.get_metric_history(fit.info.run_id, "loss")) == 500
    assert fit.data.metrics["loss"] == 1.0 / 500
    assert fit.data.metrics["accuracy"] > 0.9
    # sklearn autolog: params and the training metrics computed in the background after the fit
    assert fit.data.params["fit_intercept"] == "True" and fit.data.tags["estimator_name"]
    for key in ("accuracy_score", "f1_score", "precision_score", "recall_score", "log_loss"):
        assert f"training_{key}" in fit.data.metrics, key
    assert fit.data.metrics["training_accuracy_score"] > 0.9  # scored on the data as fitted
    assert (_artifacts(fit.info.artifact_uri) / "estimator.html").exists()
    tags = fit.data.tags
    assert tags["mlflow.source.type"] == "NOTEBOOK"
    assert tags["mlflow.source.name"] == str(nb)
    assert tags["nb_mlops.mode"] == "interactive"
    assert tags["team"] == "churn"
    assert tags["nb_mlops.hidden_state"] == "clean"
    import hashlib

    assert tags["nb_mlops.notebook_sha256"] == hashlib.sha256(nb.read_bytes()).hexdigest()
    assert tags["nb_mlops.python"].count(".") == 2 and len(tags["nb_mlops.env_sha256"]) == 64
    # artifacts: the notebook, per-cell hashes, hidden-state report, environment
    art = _artifacts(fit.info.artifact_uri)
    assert (art / "notebook" / "churn.ipynb").read_bytes() == nb.read_bytes()
    cells = json.loads((art / "notebook" / "cells.json").read_text())
    assert [c["index"] for c in cells][:3] == [0, 1, 2]
    assert all(len(c["sha256"]) == 64 for c in cells)
    assert any("injected-parameters" in c["tags"] and c["ran_as"] for c in cells)
    assert json.loads((art / "notebook" / "hidden_state.json").read_text())["warnings"] == []
    assert "scikit-learn==" in (art / "environment" / "requirements.txt").read_text()
    # the model, logged in the background, belongs to the run and loads
    models = client.search_logged_models([exp.experiment_id])
    assert [m.source_run_id for m in models] == [fit.info.run_id]
    import mlflow.sklearn

    mlflow.set_tracking_uri(f"sqlite:///{project / '.nb_mlops' / 'mlflow.db'}")
    loaded = mlflow.sklearn.load_model(models[0].model_uri)
    assert loaded.get_params()["C"] == 0.5

    # a raising cell: FAILED, traceback kept, error tag; an interrupt: KILLED
    boom = runs["boom"]
    assert boom.info.status == "FAILED"
    assert boom.data.tags["nb_mlops.error"] == "ValueError: boom 42"
    trace = (_artifacts(boom.info.artifact_uri) / "error" / "traceback.txt").read_text()
    assert "ValueError: boom 42" in trace
    assert runs["stop"].info.status == "KILLED"
