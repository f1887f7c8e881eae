"""The loop in real kernels: a notebook built into a pipeline, run and promoted; shifted data
arrives; a check finds drift; its policy retrains through the stored production pipeline and
promotes through the gates (or is blocked by them), with alerts and journals naming the check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monitor_helpers import make_frame
from nbutil import new_notebook
from webhook_receiver import webhook_receiver

import nb_mlops
from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.data import snapshot
from nb_mlops.core.monitoring import checks
from nb_mlops.pipeline import build_pipeline, run_pipeline

FIT = """%%track -n fit
from sklearn.linear_model import LogisticRegression
model = LogisticRegression(C=C).fit(X, y)
nb_mlops.log(accuracy=model.score(X, y))
"""


def _config(root: Path, url: str, accuracy: str) -> None:
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.nb_mlops]\n\n[tool.nb_mlops.gates]\n'
        f'metrics = {{ accuracy = "{accuracy}" }}\n\n'
        '[tool.nb_mlops.monitor]\nlabel = "target"\n\n'
        '[tool.nb_mlops.monitor.policy]\non_drift = "retrain"\nauto_promote = true\n\n'
        f'[tool.nb_mlops.monitor.alerts]\nwebhooks = ["{url}"]\nbackoff = 0.01\n'
    )


def _promoted_champion(project: Path) -> None:
    """A notebook that trains on the latest `train` snapshot, built, run and promoted."""
    snapshot(make_frame(2_000, seed=0), "train", context="train", wait=True)
    notebook = new_notebook(
        project / "churn.ipynb",
        [
            ("C = 1.0", ["parameters"]),
            "import nb_mlops\ndf = nb_mlops.restore('train')\nX, y = df[['x', 'y']], df['target']",
            FIT,
        ],
    )
    build_pipeline(notebook)
    first = run_pipeline("churn")
    assert first.status == "SUCCEEDED", first.error
    nb_mlops.promote(first.run_id, model="churn", reason="first")
    assert [d["ref"] for d in nb_mlops.lineage("churn").data] == ["train@v1"]


def _check_retrain_run(result: Any) -> None:
    """The retraining run: a production run of the stored pipeline, linked to the check, and
    re-pointed: the steps' restore('train') read the new data, batch@v1, not train@v1."""
    retrain = result.actions[1]
    run = store.client(load_config()).get_run(str(retrain.run_id))
    assert run.data.tags["nb_mlops.mode"] == "production"
    assert run.data.tags["nb_mlops.monitor.trigger"] == result.run_id
    assert run.data.tags["nb_mlops.monitor.data"] == "batch@v1"
    assert run.data.tags["nb_mlops.monitor.reference"] == "train@v1"
    assert json.loads(run.data.tags["nb_mlops.data_pins"]) == {"train": "batch@v1"}
    assert run.data.tags["nb_mlops.data.batch"].startswith("v1:")
    assert "nb_mlops.data.train" not in run.data.tags
    assert "as the pipeline names them" not in str(retrain.detail)
    # and the new champion's lineage names the new data and the retraining run
    found = nb_mlops.lineage("churn")
    assert found.version == "2" and found.pipeline_run["run_id"] == retrain.run_id
    assert [d["ref"] for d in found.data] == ["batch@v1"]


def test_drift_retrains_the_production_pipeline_and_promotes_through_the_gates(
    project: Path,
) -> None:
    with webhook_receiver() as rx:
        _config(project, rx.url, ">= 0.6")
        # Given a notebook that trains on the latest `train` snapshot, built, run and promoted
        _promoted_champion(project)

        # When shifted data arrives under another name, `batch`, and the champion is checked
        snapshot(make_frame(2_000, shift=1.0, share=0.7, seed=5), "batch", wait=True)
        result = nb_mlops.monitor("churn", data="batch")

        # Then it drifted against the training version, and the policy retrained and promoted
        assert (result.verdict, result.reference, result.data) == ("drift", "train@v1", "batch@v1")
        steps = [(a.name, a.event, a.status) for a in result.actions]
        assert steps == [
            ("alert", "drift", "done"),
            ("retrain", None, "done"),
            ("promote", None, "done"),
            ("alert", "promotion", "done"),
        ]
        _check_retrain_run(result)
        # and the promotion journal names the policy and the check
        last = nb_mlops.history("churn")[-1]
        assert last.action == "promote" and last.reason is not None
        assert last.reason.startswith("policy auto_promote after policy on_drift = retrain")
        assert str(result.run_id) in last.reason
        # the first promotion (by hand) was announced too; the policy's once, by the policy
        assert [b["event"] for b in rx.bodies()] == ["promotion", "drift", "promotion"]
        assert rx.bodies("promotion")[-1]["to_version"] == "2"
        assert [a["status"] for a in checks("churn")[-1]["actions"]] == ["done"] * 4

        # When the gates cannot pass and more shifted data arrives
        _config(project, rx.url, ">= 0.9999")
        snapshot(make_frame(2_000, shift=-1.0, share=0.2, seed=6), "batch", wait=True)
        blocked = nb_mlops.monitor("churn", data="batch")
        # Then the retrained run is blocked by the gates, the champion stays, an alert says so
        # (the champion also decayed on these labelled rows: that is alerted too)
        assert blocked.verdict == "decay"
        assert [(a.name, a.event, a.status) for a in blocked.actions] == [
            ("alert", "drift", "done"),
            ("alert", "decay", "done"),
            ("retrain", None, "done"),
            ("promote", None, "blocked"),
            ("alert", "retrain_blocked", "done"),
        ]
        assert nb_mlops.lineage("churn").version == "2"
        # the champion's steps restore `train` (its pins said so): `train` read batch@v2
        again = store.client(load_config()).get_run(str(blocked.actions[2].run_id))
        assert json.loads(again.data.tags["nb_mlops.data_pins"]) == {"train": "batch@v2"}
        assert again.data.tags["nb_mlops.data.batch"].startswith("v2:")
        assert rx.bodies()[-1]["event"] == "retrain_blocked"
        assert nb_mlops.history("churn")[-1].action == "blocked"
