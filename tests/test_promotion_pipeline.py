"""End to end in real kernels: build a pipeline from a notebook, run it, promote it, read its lineage,
edit the notebook, and check that a production run executes the *stored* pipeline version."""

from __future__ import annotations

import json
from pathlib import Path

from nbutil import new_notebook

import nb_mlops
from nb_mlops.cli import main
from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.promotion import history
from nb_mlops.pipeline import build_pipeline, run_pipeline
from nb_mlops.pipeline.production import run_production

FIT = """%%track -n fit
from sklearn.linear_model import LogisticRegression
model = LogisticRegression(C=C).fit(X, y)
nb_mlops.log(accuracy=model.score(X, y), marker={marker})
"""


def _notebook(root: Path, marker: float) -> Path:
    return new_notebook(
        root / "churn.ipynb",
        [
            ("C = 1.0", ["parameters"]),
            "import numpy as np\nimport nb_mlops\nrng = np.random.RandomState(0)\n"
            "X = rng.randn(200, 3)\ny = (X[:, 0] > 0).astype(int)",
            FIT.format(marker=marker),
        ],
    )


def test_pipeline_run_is_promoted_and_production_runs_the_stored_version(
    project: Path, capsys: object
) -> None:
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.nb_mlops]\n\n[tool.nb_mlops.gates]\n'
        'metrics = { accuracy = ">= 0.9" }\nbeat_champion = { metric = "accuracy", min_delta = 0.0 }\n'
    )
    # Given a notebook built into a pipeline and run with C=0.5
    notebook = _notebook(project, marker=1.0)
    build_pipeline(notebook)
    first = run_pipeline("churn", {"C": 0.5})
    assert first.status == "SUCCEEDED", first.error

    # When its run is promoted from the command line
    assert (
        main(["promote", "--latest", "churn", "--model", "churn", "--reason", "first", "--json"])
        == 0
    )
    decision = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    # Then the model the step logged is champion v1, with the pipeline version recorded
    assert (decision["status"], decision["version"], decision["run_id"]) == (
        "PROMOTED",
        "1",
        first.run_id,
    )
    assert [g["verdict"] for g in decision["gates"]] == ["PASS", "SKIP"]
    client = store.client(load_config())
    parent = client.get_run(first.run_id)
    mv = client.get_model_version_by_alias("churn", "champion")
    assert mv.tags["nb_mlops.pipeline_hash"] == parent.data.tags["nb_mlops.pipeline_hash"]

    # And the lineage walks back to the notebook, the parameters and the environment
    found = nb_mlops.lineage("churn").as_dict()
    assert found["pipeline_run"]["run_id"] == first.run_id
    assert found["pipeline"]["name"] == "churn"
    assert found["pipeline"]["hash"] == parent.data.tags["nb_mlops.pipeline_hash"]
    assert found["notebook"]["path"] == str(notebook.resolve())
    assert found["notebook"]["sha256"] == parent.data.tags["nb_mlops.notebook_sha256"]
    assert found["parameters"] == {"C": "0.5"}
    assert found["environment"]["requirements"]
    assert found["promotion"]["reason"] == "first"

    # When the notebook is edited and rebuilt (the working pipeline changes)
    build_pipeline(_notebook(project, marker=2.0))
    # And a production run of the model is started
    prod = run_production("churn")
    # Then the stored version ran (marker 1.0), with the promoted run's parameters, tagged production
    assert prod.status == "SUCCEEDED", prod.error
    run = client.get_run(prod.run_id)
    assert run.data.metrics["marker"] == 1.0
    assert run.data.params == {"C": "0.5"}
    assert run.data.tags["nb_mlops.mode"] == "production"
    assert run.data.tags["nb_mlops.pipeline_hash"] == mv.tags["nb_mlops.pipeline_hash"]
    assert run.data.tags["nb_mlops.production.model"] == "churn"
    assert run.data.tags["nb_mlops.production.version"] == "1"
    assert run.data.tags["mlflow.source.name"] == str(notebook.resolve())
    # And it did not promote itself
    assert [e.action for e in history("churn")] == ["promote"]

    # When that production run is promoted, the gates apply; passing, its model is champion
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.nb_mlops]\n\n[tool.nb_mlops.gates]\n'
        'metrics = { accuracy = ">= 0.9" }\n'
    )
    again = nb_mlops.promote(prod.run_id, model="churn", reason="weekly retrain")
    assert (again.status, again.previous_version, again.version) == ("PROMOTED", "1", "2")
    last = history("churn")[-1]
    assert (last.action, last.candidate_run, last.reason) == (
        "promote",
        prod.run_id,
        "weekly retrain",
    )
    assert {k: str(v) for k, v in client.get_registered_model("churn").aliases.items()} == {
        "champion": "2",
        "previous-champion": "1",
    }
    # the new version keeps the same production pipeline version, and lineage says production
    assert (
        client.get_model_version("churn", "2").tags["nb_mlops.pipeline_hash"]
        == mv.tags["nb_mlops.pipeline_hash"]
    )
    assert nb_mlops.lineage("churn/2").pipeline_run["mode"] == "production"
