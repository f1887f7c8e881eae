"""The features against a team store: an `mlflow server` on PostgreSQL, named by `tracking_uri` and
`registry_uri` in `[tool.nb_mlops]`. Tracked runs, the runs view, data lineage, a pipeline built from
a notebook and run in real kernels, a notebook with `%%track` and `%mlops` in a real kernel, gated
promotion and rollback, approvals, a promote job of the Jupyter server extension, scoring and drift
checks: what the server holds afterwards is read back with a plain MlflowClient. One server serves
the module; each test has its own names."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupyter_proc
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from monitor_helpers import fit_model, make_champion, make_frame
from nbutil import execute, new_notebook
from promotion_helpers import journal_lines, make_pipeline_run
from team_store import TeamStore, team_store

import nb_mlops
from nb_mlops.cli import main
from nb_mlops.core import session, tracking
from nb_mlops.core.config import load_config
from nb_mlops.core.data import snapshot
from nb_mlops.core.promotion import PromotionBlocked
from nb_mlops.pipeline import build_pipeline, run_pipeline


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStore]:
    with team_store(tmp_path_factory.mktemp("team-server")) as running:
        yield running


@pytest.fixture
def team(project: Path, server: TeamStore, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project pointed at the team server, with a fresh tracking session, and MLflow's
    process-wide URIs unset as in a fresh process (an earlier test's tracked cell sets them):
    nothing here may lean on them."""
    with (project / "pyproject.toml").open("a") as config:
        config.write(f'tracking_uri = "{server.uri}"\nregistry_uri = "{server.uri}"\n')
    from nb_mlops.core.tracking.context import _proc

    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)
    monkeypatch.setattr(_proc, "mlflow_uris", None)
    session.clear()
    tracking.set_experiment(None)
    yield project
    tracking.flush()
    tracking.set_experiment(None)
    session.clear()


def _server(server: TeamStore) -> MlflowClient:
    return MlflowClient(server.uri, server.uri)


def test_config_names_the_team_server(team: Path, server: TeamStore) -> None:
    cfg = load_config()
    assert (cfg.tracking_uri, cfg.registry_uri, cfg.is_embedded) == (server.uri, server.uri, False)
    assert not (team / ".nb_mlops" / "mlflow.db").exists()


FIT = """\
from sklearn.linear_model import LogisticRegression
model = LogisticRegression(C=0.5).fit(X, y)
nb_mlops.log(accuracy=model.score(X, y))
"""


def test_tracked_fit_with_data_lands_on_the_server_and_in_the_runs_view(
    team: Path, server: TeamStore, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a snapshot of the training frame, then a tracked cell fitting a model on it
    frame = pd.DataFrame({"a": [float(i % 7) for i in range(60)], "b": [i % 2 for i in range(60)]})
    snap = nb_mlops.snapshot(frame, "team_train", context="train", wait=True)
    tracking.set_experiment("team-track")
    namespace: dict[str, Any] = {"nb_mlops": nb_mlops, "X": frame[["a"]], "y": frame["b"]}
    tracking.bind_kernel(namespace)
    try:
        with nb_mlops.track(name="fit", cell=FIT, tags={"team": "churn"}) as run:
            exec(FIT, namespace)  # noqa: S102 - the test's own cell
        tracking.flush()
    finally:
        tracking.bind_kernel(None)
    # (and nothing printed: MLflow's "View run … at" lines would land in whichever cell runs)
    assert capsys.readouterr().out == ""

    # Then the server holds the run: finished, params by autolog, the metric, the tag
    client = _server(server)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "fit"
    assert client.get_experiment(got.info.experiment_id).name == "team-track"
    assert got.data.params["C"] == "0.5"
    assert got.data.metrics["accuracy"] == namespace["model"].score(frame[["a"]], frame["b"])
    assert got.data.tags["team"] == "churn"
    # and the fitted model, stored through the server's artifact proxy
    logged = client.search_logged_models(experiment_ids=[got.info.experiment_id])
    assert [m.source_run_id for m in logged] == [run.run_id]
    assert any(server.artifacts.rglob("MLmodel"))
    # and the snapshot as a dataset input and a tag (data lineage)
    assert got.data.tags["nb_mlops.data.team_train"] == f"v1:{snap.digest}"
    (used,) = got.inputs.dataset_inputs
    assert used.dataset.name == "team_train" and "nbmlops://team_train@v1" in used.dataset.source
    assert {t.key: t.value for t in used.tags} == {"mlflow.data.context": "train"}
    restored = nb_mlops.restore("team_train", run_id=run.run_id)
    pd.testing.assert_frame_equal(restored, frame)

    # When the runs view is read, through the API and the CLI
    page = nb_mlops.runs("team-track", metric="accuracy")
    # Then it is the server's run, read through MLflow (not the embedded SQL path)
    assert page.source == "mlflow"
    assert [(r.run_id, r.metrics["accuracy"]) for r in page] == [
        (run.run_id, got.data.metrics["accuracy"])
    ]
    capsys.readouterr()
    assert main(["runs", "-e", "team-track", "--metric", "accuracy", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in printed["runs"]] == [run.run_id]
    assert printed["runs"][0]["params"]["C"] == "0.5"
    # with links to the team server's UI, not to a local one
    assert (
        page.rows[0].url == f"{server.uri}/#/experiments/{got.info.experiment_id}/runs/{run.run_id}"
    )
    assert printed["runs"][0]["url"] == page.rows[0].url


def _outputs(nb: Any, index: int) -> tuple[str, dict[str, str]]:
    """Cell `index`'s printed text, and its one display's data by MIME type (empty when none);
    by id, as written (papermill inserts a parameters cell)."""
    (cell,) = [c for c in nb.cells if c.get("id") == f"cell-{index}"]
    outputs = cell.get("outputs", [])
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    shown = [dict(o.data) for o in outputs if o.output_type == "display_data"]
    return text, shown[0] if shown else {}


def test_a_kernel_tracks_a_cell_that_restored_a_snapshot_and_lists_the_server_runs(
    team: Path, server: TeamStore
) -> None:
    # Given a snapshot, and a notebook that restores it, tracks a cell and uses `%mlops`
    frame = pd.DataFrame({"a": [float(i) for i in range(40)]})
    snap = nb_mlops.snapshot(frame, "team_kernel", context="train", wait=True)
    notebook = new_notebook(
        team / "teamkernel.ipynb",
        [
            "%load_ext nb_mlops",  # 0
            ("C = 1.0", ["parameters"]),  # 1
            "import nb_mlops\nrows = nb_mlops.restore('team_kernel')",  # 2
            "%%track -n kfit -t team=blue\nnb_mlops.log(rows=len(rows), C=C)",  # 3
            "from nb_mlops.core import tracking\ntracking.flush()\n"
            "print('RUN', tracking.last_run_id())",  # 4
            "%mlops",  # 5
            "%mlops runs --metric rows",  # 6
        ],
    )
    out = team / "teamkernel.out.ipynb"
    # When papermill runs it in a real kernel
    result = execute(
        notebook,
        output=out,
        parameters={"PAPERMILL_INPUT_PATH": str(notebook), "PAPERMILL_OUTPUT_PATH": str(out)},
    )
    printed, _ = _outputs(result, 4)
    run_id = printed.split("RUN", 1)[1].split()[0]
    # Then the server holds the tracked cell's run, in the notebook's experiment, with the
    # snapshot it restored as a dataset input and a tag
    client = _server(server)
    got = client.get_run(run_id)
    assert (got.info.status, got.info.run_name) == ("FINISHED", "kfit")
    assert client.get_experiment(got.info.experiment_id).name == "teamkernel"
    assert got.data.metrics == {"rows": 40.0, "C": 1.0} and got.data.tags["team"] == "blue"
    assert got.data.tags["nb_mlops.data.team_kernel"] == f"v1:{snap.digest}"
    (used,) = got.inputs.dataset_inputs
    assert "nbmlops://team_kernel@v1" in used.dataset.source
    pd.testing.assert_frame_equal(nb_mlops.restore("team_kernel", run_id=run_id), frame)
    # And `%mlops` names the team server (not an embedded store), `%mlops runs` lists its run
    status, _ = _outputs(result, 5)
    assert f"store       {server.uri}" in status and "(embedded)" not in status
    assert run_id in status
    shown = _outputs(result, 6)[1]
    assert "kfit" in shown["text/plain"]
    assert (
        f"{server.uri}/#/experiments/{got.info.experiment_id}/runs/{run_id}" in shown["text/html"]
    )


def _notebook(root: Path, name: str) -> Path:
    return new_notebook(
        root / f"{name}.ipynb",
        [
            ("C = 1.0", ["parameters"]),
            "import nb_mlops\nrows = nb_mlops.restore('team_rows')\n"
            "X = rows[['a', 'b', 'c']].to_numpy()\ny = rows['y'].to_numpy()",
            "%%track -n fit\nfrom sklearn.linear_model import LogisticRegression\n"
            "model = LogisticRegression(C=C).fit(X, y)\nnb_mlops.log(accuracy=model.score(X, y))",
        ],
    )


def _gates(root: Path, accuracy: str) -> None:
    text = (root / "pyproject.toml").read_text().split("\n[tool.nb_mlops.gates]")[0]
    (root / "pyproject.toml").write_text(
        f'{text}\n[tool.nb_mlops.gates]\nmetrics = {{ accuracy = "{accuracy}" }}\n'
    )


def _aliases(client: MlflowClient, model: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(model).aliases.items()}


def test_pipeline_runs_promotes_and_rolls_back_on_the_server(
    team: Path,
    server: TeamStore,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _server(server)
    # Given a notebook that restores a snapshot, built into a pipeline and run twice in real kernels
    rng = np.random.RandomState(0)
    rows = pd.DataFrame(rng.randn(200, 3), columns=["a", "b", "c"])
    rows["y"] = (rows["a"] > 0).astype(int)
    snap = nb_mlops.snapshot(rows, "team_rows", context="train", wait=True)
    notebook = _notebook(team, "teamchurn")
    build_pipeline(notebook)
    first = run_pipeline("teamchurn", {"C": 0.5})
    assert first.status == "SUCCEEDED", first.error
    second = run_pipeline("teamchurn", {"C": 2.0})
    assert second.status == "SUCCEEDED", second.error

    # Then the server holds each pipeline run, its step run, and the tracked cell under the step
    parent = client.get_run(first.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["nb_mlops.mode"] == "pipeline"
    assert parent.data.tags["nb_mlops.pipeline"] == "teamchurn"
    assert parent.data.params == {"C": "0.5"}
    experiments = [parent.info.experiment_id]
    (step,) = client.search_runs(experiments, f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert step.info.status == "FINISHED"
    (fit,) = client.search_runs(experiments, f"tags.mlflow.parentRunId = '{step.info.run_id}'")
    assert fit.info.run_name == "fit" and fit.data.metrics["accuracy"] > 0.9
    # and the snapshot the step restored, on the tracked cell and copied onto the pipeline run
    assert fit.data.tags["nb_mlops.data.team_rows"] == f"v1:{snap.digest}"
    assert parent.data.tags["nb_mlops.data.team_rows"] == f"v1:{snap.digest}"

    # When the first run is promoted through a passing gate
    _gates(team, ">= 0.9")
    promoted = nb_mlops.promote(first.run_id, model="team-churn", reason="first")
    assert (promoted.status, promoted.version) == ("PROMOTED", "1")
    assert {g.gate: g.verdict for g in promoted.gates}["metric:accuracy"] == "PASS"
    assert _aliases(client, "team-churn") == {"champion": "1"}
    assert client.get_model_version("team-churn", "1").run_id == first.run_id

    # When the second one meets a gate it fails: blocked, nothing moves on the server
    _gates(team, ">= 1.01")
    with pytest.raises(PromotionBlocked) as blocked:
        nb_mlops.promote(second.run_id, model="team-churn", reason="too strict")
    assert {g.gate: g.verdict for g in blocked.value.decision.gates}["metric:accuracy"] == "FAIL"
    assert _aliases(client, "team-churn") == {"champion": "1"}

    # When the gate passes again and the latest run is promoted from the command line
    _gates(team, ">= 0.9")
    code = main(
        ["promote", "--latest", "teamchurn", "--model", "team-churn", "--reason", "x", "--json"]
    )
    assert code == 0
    decision = json.loads(capsys.readouterr().out)
    assert (decision["status"], decision["run_id"]) == ("PROMOTED", second.run_id)
    champion = decision["version"]
    assert _aliases(client, "team-churn") == {"champion": champion, "previous-champion": "1"}

    # When rolled back
    back = nb_mlops.rollback("team-churn", reason="complaints")
    # Then version 1 is champion again on the server, and the journal agrees
    assert (back.status, back.version, back.previous_version) == ("ROLLED_BACK", "1", champion)
    assert _aliases(client, "team-churn") == {"champion": "1", "previous-champion": champion}
    assert [(e.action, e.from_version, e.to_version) for e in nb_mlops.history("team-churn")] == [
        ("promote", None, "1"),
        ("blocked", "1", None),
        ("promote", "1", champion),
        ("rollback", champion, "1"),
    ]

    # And the lineage walks from the champion back to its pipeline run, notebook and parameters
    found = nb_mlops.lineage("team-churn@champion").as_dict()
    assert found["pipeline_run"]["run_id"] == first.run_id
    assert found["pipeline"]["name"] == "teamchurn"
    assert found["pipeline"]["hash"] == parent.data.tags["nb_mlops.pipeline_hash"]
    assert found["notebook"]["path"] == str(notebook.resolve())
    assert found["parameters"] == {"C": "0.5"}
    assert [(d["ref"], d["digest"]) for d in found["data"]] == [("team_rows@v1", snap.digest)]

    # When a teammate, in another checkout on the same server (no local journal), rolls back
    teammate = tmp_path / "teammate"
    teammate.mkdir()
    (teammate / "pyproject.toml").write_text((team / "pyproject.toml").read_text())
    monkeypatch.chdir(teammate)
    assert nb_mlops.lineage("team-churn").as_dict()["pipeline_run"]["run_id"] == first.run_id
    theirs = nb_mlops.rollback("team-churn", reason="v1 was worse")
    # Then the server's previous-champion alias decides the target, and both aliases move
    assert (theirs.version, theirs.previous_version) == (champion, "1")
    assert _aliases(client, "team-churn") == {"champion": champion, "previous-champion": "1"}
    assert [e.action for e in nb_mlops.history("team-churn")] == ["rollback"]


APPROVAL = """
[tool.nb_mlops.gates]
metrics = { accuracy = ">= 0.5" }

[tool.nb_mlops.promotion]
promoters = ["alice"]
approvers = ["bob"]
require_approval = true
"""


def test_a_promotion_request_is_approved_by_another_user_on_the_server(
    team: Path, server: TeamStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a project on the server whose promotions need an approver's word
    with (team / "pyproject.toml").open("a") as config:
        config.write(APPROVAL)
    client = _server(server)
    run = make_pipeline_run(load_config(), experiment="team-approvals")
    # When alice promotes a run: a request, gates checked, nothing registered on the server
    monkeypatch.setenv("NB_MLOPS_USER", "alice")
    request = nb_mlops.promote(run, model="team-approved", reason="weekly")
    assert request.status == "PENDING_APPROVAL" and request.gates[0].verdict == "PASS"
    assert client.search_model_versions("name = 'team-approved'") == []
    assert [r.id for r in nb_mlops.approvals("team-approved")] == [request.entry_id]
    # and she, not an approver, cannot approve it
    with pytest.raises(nb_mlops.NbMlopsError, match="'alice' may not approve"):
        nb_mlops.approve(str(request.entry_id))
    # When bob approves it
    monkeypatch.setenv("NB_MLOPS_USER", "bob")
    done = nb_mlops.approve(str(request.entry_id), reason="gates look right")
    # Then the version is registered on the server and is its champion, journaled with both users
    assert (done.status, done.version, done.requester) == ("PROMOTED", "1", "alice")
    assert _aliases(client, "team-approved") == {"champion": "1"}
    assert client.get_model_version("team-approved", "1").run_id == run
    assert nb_mlops.approvals("team-approved") == []
    assert [e.action for e in nb_mlops.history("team-approved")] == ["request", "promote"]
    last = journal_lines(team, "team-approved")[-2]  # (the last line commits it)
    assert (last["action"], last["who"], last["requester"]) == ("promote", "bob", "alice")
    assert nb_mlops.lineage("team-approved").pipeline_run["run_id"] == run


def test_the_champion_scores_and_a_drift_check_is_a_run_on_the_server(
    team: Path, server: TeamStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a champion whose model is stored through the server's artifact proxy
    cfg = load_config()
    parent, version = make_champion(
        make_frame(2_000, seed=0), model_name="team-watch", snapshot_name="team_watch", cfg=cfg
    )
    # (the helper set MLflow's process-wide URI: unset it, as in a fresh scoring process)
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = _server(server)
    assert _aliases(client, "team-watch") == {"champion": version}
    assert client.get_model_version("team-watch", version).source.startswith(
        ("mlflow-artifacts:", "models:/")
    )
    snapshot(make_frame(2_000, shift=0.8, share=0.7, seed=12), "team_batch", wait=True)
    # When it scores a batch: the predictions are the model's, the score run is on the server
    scored = nb_mlops.score("team-watch@champion", data="team_batch")
    batch = make_frame(2_000, shift=0.8, share=0.7, seed=12)
    expected = fit_model(make_frame(2_000, seed=0)).predict(batch[["x", "y", "c", "k"]])
    assert scored.predictions["prediction"].tolist() == expected.tolist()
    run = client.get_run(scored.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["nb_mlops.mode"] == "score"
    assert run.data.tags["nb_mlops.score.version"] == version
    # When the champion is checked on the shifted batch
    result = nb_mlops.monitor("team-watch", data="team_batch")
    # Then it drifted against its training snapshot, found through lineage on the server
    assert (result.verdict, result.exit_code, result.reference) == ("drift", 3, "team_watch@v1")
    check = client.get_run(str(result.run_id))
    assert check.info.status == "FINISHED"
    assert check.data.tags["nb_mlops.mode"] == "monitor"
    assert check.data.tags["nb_mlops.monitor.verdict"] == "drift"
    assert check.data.metrics["drift.x.drifted"] == 1.0
    # and the check's report is an artifact of that run, on the server
    names = {f.path for f in client.list_artifacts(str(result.run_id))}
    assert names, "the check run has no artifacts"
    assert nb_mlops.lineage("team-watch").pipeline_run["run_id"] == parent


TOKEN = "team-store-token"


def _api(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/nb-mlops/api/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _final(port: int, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _api(port, "GET", f"jobs/{job_id}")
        if job["status"] not in ("QUEUED", "RUNNING"):
            return dict(job)
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout:g} s")


def test_a_promote_job_of_the_server_extension_registers_on_the_team_server(
    server: TeamStore, tmp_path: Path
) -> None:
    # Given a Jupyter server (the extension on) whose project's store is the team server
    root = tmp_path / "jroot"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "demo"\n\n[tool.nb_mlops]\nmodel = "team-job"\n'
        f'tracking_uri = "{server.uri}"\nregistry_uri = "{server.uri}"\n\n'
        '[tool.nb_mlops.gates]\nmetrics = { accuracy = ">= 0.5" }\n'
    )
    new_notebook(
        root / "nb" / "model.ipynb",
        [
            ("C: float = 1.0", ["parameters"]),
            (
                "import nb_mlops\nfrom sklearn.datasets import load_iris\n"
                "from sklearn.linear_model import LogisticRegression",
                ["step:train"],
            ),
            "%%track\nX, y = load_iris(return_X_y=True)\n"
            "model = LogisticRegression(C=C, max_iter=300).fit(X, y)\n"
            "nb_mlops.log(accuracy=model.score(X, y))",
        ],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_MLOPS_", "JUPYTER_"))}
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jupyter-config")
    proc, port = jupyter_proc.start(
        root, token=TOKEN, env=env, lab=False, log=tmp_path / "jupyter.log"
    )
    try:
        # When a promote job is posted
        body = {"path": "nb/model.ipynb", "action": "promote", "parameters": {"C": 0.5}}
        job = _api(port, "POST", "jobs", body)
        final = _final(port, job["id"])
        history = _api(port, "GET", "models/team-job/history")
    finally:
        jupyter_proc.stop(proc)
    # Then it ended PROMOTED, and the team registry holds the version as champion
    assert final["status"] == "PROMOTED", final.get("log_tail")
    assert final["model_version"] == "1"
    client = _server(server)
    assert _aliases(client, "team-job") == {"champion": "1"}
    assert client.get_model_version("team-job", "1").run_id == final["run_id"]
    # from a pipeline run on the server, with the job's parameters
    parent = client.get_run(final["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params == {"C": "0.5"}
    assert parent.data.tags["nb_mlops.mode"] == "pipeline"
    assert [(e["action"], e["to_version"]) for e in history["entries"]] == [("promote", "1")]
