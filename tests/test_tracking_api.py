"""`nb_mlops.track` / `log` / `flush` in this process, the lineage contract, and the hidden-state
report, each checked against a real SQLite store."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from nbutil import new_notebook

import nb_mlops
from nb_mlops.core import session, tracking
from nb_mlops.core.capture import notebook as nbcap
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import NoActiveRun, TrackingError
from nb_mlops.core.store import client as store_client
from nb_mlops.core.store import experiment_id


@pytest.fixture(autouse=True)
def _fresh_session() -> object:
    session.clear()
    tracking.set_experiment(None)
    yield
    tracking.flush()
    session.clear()


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / '.nb_mlops' / 'mlflow.db'}")


def test_log_outside_a_tracked_run_says_to_use_track(project: Path) -> None:
    with pytest.raises(NoActiveRun, match="%%track"):
        nb_mlops.log(accuracy=1.0)


def test_track_persists_metrics_steps_and_status(project: Path) -> None:
    # Given a tracked block logging a curve, special floats and an explicit step
    with nb_mlops.track(name="curve", tags={"k": "v"}) as run:
        for i in range(2_000):
            nb_mlops.log(loss=1 / (i + 1))
        nb_mlops.log(step=7, acc=0.5, nan=math.nan, inf=math.inf)
        with pytest.raises(TrackingError, match="'bad'"):
            nb_mlops.log(bad="x")
    tracking.flush()
    # Then every point is there, in order, and the run is FINISHED in the root's experiment
    c = _client(project)
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "curve"
    assert c.get_experiment(got.info.experiment_id).name == project.name
    history = c.get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == list(range(2_000))
    assert got.data.metrics["loss"] == 1 / 2000
    assert got.data.metrics["acc"] == 0.5 and math.isnan(got.data.metrics["nan"])
    assert got.data.metrics["inf"] > 1e308
    assert got.data.tags["k"] == "v" and got.data.tags["mlflow.source.type"] == "NOTEBOOK"
    assert tracking.last_run_id() == run.run_id and tracking.active_run_id() is None


@pytest.mark.parametrize("key", ["a\nb", "", "../up", "/abs", "a//b", "x" * 251, "semi;colon"])
def test_a_name_mlflow_refuses_fails_in_the_call_naming_it(project: Path, key: str) -> None:
    # Given a tracked block, When a metric, parameter or tag gets a name MLflow refuses
    with nb_mlops.track(name="names") as run:
        for call in (
            lambda: nb_mlops.log(**{key: 1.0}),
            lambda: run.log_params({key: 1}),
            lambda: run.set_tag(key, "v"),
        ):
            # Then that call raises one line naming it (on every store alike: a server would
            # refuse the whole batch at the block's end)
            with pytest.raises(TrackingError, match="not one MLflow accepts") as info:
                call()
            assert repr(key)[:40] in str(info.value) and "\n" not in str(info.value)
        nb_mlops.log(**{"fine name/ä:1": 1.0})
    tracking.flush()
    assert _client(project).get_run(run.run_id).data.metrics == {"fine name/ä:1": 1.0}


def test_a_parameter_keeps_its_first_value_and_a_new_one_is_refused(project: Path) -> None:
    with nb_mlops.track(name="params") as run:
        run.log_params({"lr": 0.1, "depth": 3})
        run.log_params({"lr": 0.1})  # the same value again: fine
        # When a parameter is given another value, Then the call raises and logs nothing of it
        with pytest.raises(TrackingError, match=r"parameter 'lr' is already '0.1'.*'0.2'"):
            run.log_params({"other": 1, "lr": 0.2})
        # And a value longer than MLflow keeps is cut to its limit, with a warning
        with pytest.warns(UserWarning, match="MLflow keeps the first 6,000"):
            run.log_params({"long": "x" * 7000})
    tracking.flush()
    params = _client(project).get_run(run.run_id).data.params
    assert params == {"lr": "0.1", "depth": "3", "long": "x" * 6000}


def test_raise_marks_failed_and_interrupt_marks_killed(project: Path) -> None:
    with pytest.raises(ZeroDivisionError), nb_mlops.track(name="bad") as bad:
        1 / 0  # noqa: B018
    with pytest.raises(KeyboardInterrupt), nb_mlops.track(name="stopped") as stopped:
        raise KeyboardInterrupt
    tracking.flush()
    c = _client(project)
    assert c.get_run(bad.run_id).info.status == "FAILED"
    assert (
        c.get_run(bad.run_id).data.tags["nb_mlops.error"] == "ZeroDivisionError: division by zero"
    )
    assert c.get_run(stopped.run_id).info.status == "KILLED"
    import mlflow

    assert mlflow.active_run() is None


def test_nested_track_and_experiment_override(project: Path) -> None:
    tracking.set_experiment("exp-a")
    assert tracking.current_experiment_name() == "exp-a"
    with nb_mlops.track(name="outer") as outer, nb_mlops.track(name="inner") as inner:
        nb_mlops.log(x=1)
    tracking.flush()
    c = _client(project)
    assert c.get_run(inner.run_id).data.tags["mlflow.parentRunId"] == outer.run_id
    assert c.get_run(inner.run_id).data.metrics == {"x": 1.0}
    assert c.get_run(outer.run_id).info.experiment_id == c.get_run(inner.run_id).info.experiment_id
    assert c.get_experiment_by_name("exp-a").experiment_id == outer.experiment_id


def test_pipeline_step_logs_to_the_step_run_and_nests_tracked_cells(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a step run created by the runner (RUNNING) and the runner's environment
    cfg = load_config()
    c = store_client(cfg)
    step = c.create_run(experiment_id(cfg, "pipe"), run_name="step-train")
    for name, value in {
        "NB_MLOPS_ROOT": str(project),
        "NB_MLOPS_RUN_ID": step.info.run_id,
        "NB_MLOPS_MODE": "pipeline",
        "NB_MLOPS_EXPERIMENT": "pipe",
        "NB_MLOPS_PIPELINE": "churn",
        "NB_MLOPS_STEP": "train",
        "NB_MLOPS_NOTEBOOK": str(project / "churn.ipynb"),
    }.items():
        monkeypatch.setenv(name, value)
    # When the step logs outside and inside a tracked cell
    nb_mlops.log(rows=10)
    with nb_mlops.track(name="fit") as nested:
        nb_mlops.log(acc=0.9)
    tracking.flush()
    # Then the step run has its metric and the tracked cell is nested under it
    assert c.get_run(step.info.run_id).data.metrics == {"rows": 10.0}
    got = c.get_run(nested.run_id)
    assert got.data.tags["mlflow.parentRunId"] == step.info.run_id
    assert got.data.tags["nb_mlops.mode"] == "pipeline"
    assert (
        got.data.tags["nb_mlops.pipeline"] == "churn" and got.data.tags["nb_mlops.step"] == "train"
    )
    assert got.data.tags["mlflow.source.name"] == str(project / "churn.ipynb")
    assert c.get_experiment(got.info.experiment_id).name == "pipe"
    c.set_terminated(step.info.run_id)


def test_data_uses_become_dataset_inputs_and_tags(project: Path) -> None:
    before = session.DataUse(
        "train",
        3,
        "a" * 64,
        context="train",
        source="nbmlops://train@v3",
        rows=100,
        schema={"x": "float64"},
    )
    session.note_data_use(before)
    with nb_mlops.track(name="lineage") as run:
        session.note_data_use(
            session.DataUse("eval", 1, "b" * 64, context="eval", source="nbmlops://eval@v1")
        )
    session.note_data_use(session.DataUse("late", 1, "c" * 64))  # after the run: not linked
    tracking.flush()
    got = _client(project).get_run(run.run_id)
    assert got.data.tags["nb_mlops.data.train"] == f"v3:{'a' * 64}"
    assert got.data.tags["nb_mlops.data.eval"] == f"v1:{'b' * 64}"
    assert "nb_mlops.data.late" not in got.data.tags
    inputs = {i.dataset.name: i for i in got.inputs.dataset_inputs}
    assert set(inputs) == {"train", "eval"}
    assert "nbmlops://train@v3" in inputs["train"].dataset.source
    assert {t.key: t.value for t in inputs["eval"].tags} == {"mlflow.data.context": "eval"}


def test_failed_writes_are_reported_by_flush(project: Path) -> None:
    # a metric logged to a run that does not exist cannot be saved: flush() says so
    with nb_mlops.track(name="ok") as run:
        pass
    tracking.flush()
    run.run_id = "0" * 32  # the writer sees an unknown run id
    run.log(x=1.0)
    from nb_mlops.core.errors import StoreError

    with pytest.raises(StoreError, match="could not save"):
        tracking.flush()


# --- hidden state (pure functions over a saved notebook and the kernel's input history) -------


def _nb(tmp_path: Path, cells: list[str]) -> nbcap.NotebookFile:
    path = new_notebook(tmp_path / "h.ipynb", cells)
    nb = nbcap.read_notebook(path)
    assert nb is not None
    return nb


def test_hidden_state_clean_when_cells_ran_in_order(tmp_path: Path) -> None:
    nb = _nb(tmp_path, ["a = 1", "b = a + 1", "%%track\nc = b"])
    report = nbcap.hidden_state(nb, ["", "a = 1", "b = a + 1", "%%track\nc = b"], "%%track\nc = b")
    assert report["warnings"] == [] and report["tracked_cell"] == 2


def test_hidden_state_reports_out_of_order_never_run_edited_and_stray(tmp_path: Path) -> None:
    nb = _nb(tmp_path, ["a = 1", "b = a + 1", "z = 0", "q = 2", "%%track\nc = b"])
    # cell 1 ran before cell 0 was re-run; cell 2 never ran; an input not in the notebook ran
    history = ["", "a = 1", "b = a + 1", "a = 1", "x = 99", "%%track\nc = b"]
    report = nbcap.hidden_state(nb, history, "%%track\nc = b")
    text = " | ".join(report["warnings"])
    assert "cell 1 last ran as In[2], before cell 0" in text
    assert "cell 2 (above the tracked cell) never ran" in text
    assert "1 input(s) ran that are not in the saved notebook (In[4])" in text
    assert report["not_in_notebook"] == 1


def test_hidden_state_reports_unsaved_tracked_cell(tmp_path: Path) -> None:
    nb = _nb(tmp_path, ["a = 1", "%%track\nc = a"])
    report = nbcap.hidden_state(nb, ["", "a = 1", "%%track\nc = a + 1"], "%%track\nc = a + 1")
    assert report["unsaved"] and "not in the saved notebook" in report["warnings"][0]


def test_parameter_values_injected_cell_wins_and_namespace_values_are_used(tmp_path: Path) -> None:
    path = new_notebook(
        tmp_path / "p.ipynb",
        [
            ("lr = 0.1\nepochs: int = 3\nname = 'x'", ["parameters"]),
            ("lr = 0.5\nPAPERMILL_INPUT_PATH = 'p.ipynb'", ["injected-parameters"]),
        ],
    )
    nb = nbcap.read_notebook(path)
    assert nb is not None
    assert nbcap.parameter_values(nb, None) == {"lr": 0.5, "epochs": 3, "name": "x"}
    assert nbcap.parameter_values(nb, {"epochs": 9})["epochs"] == 9


def test_experiment_created_with_sql_equals_one_created_by_mlflow(project: Path) -> None:
    # Given one experiment created by MLflow (store.experiment_id) and one by plain SQL
    import sqlite3

    from nb_mlops.core.store import artifact_location_for, embedded_experiment

    cfg = load_config()
    by_mlflow = experiment_id(cfg, "made-by-mlflow")
    found = embedded_experiment(cfg, "made-by-sql")
    assert found is not None
    by_sql, location = found
    # Then the rows agree on everything but id, name, times and the name-derived location
    con = sqlite3.connect(cfg.db_path)
    con.row_factory = sqlite3.Row
    rows = {
        r["name"]: dict(r)
        for r in con.execute("SELECT * FROM experiments WHERE name LIKE 'made-by-%'")
    }
    con.close()
    a, b = rows["made-by-mlflow"], rows["made-by-sql"]
    assert set(a) == set(b)
    assert b["artifact_location"] == location == artifact_location_for(cfg, "made-by-sql")
    assert a["artifact_location"] == artifact_location_for(cfg, "made-by-mlflow")
    assert (
        b["creation_time"] == b["last_update_time"] and a["creation_time"] == a["last_update_time"]
    )
    same = {"lifecycle_stage", "workspace"}
    assert (
        {k: a[k] for k in same}
        == {k: b[k] for k in same}
        == {
            "lifecycle_stage": "active",
            "workspace": "default",
        }
    )
    assert int(by_sql) == int(by_mlflow) + 1  # the same id sequence
    # And MLflow reads it back and uses it like its own; a second call finds it
    c = _client(project)
    exp = c.get_experiment_by_name("made-by-sql")
    assert exp is not None and exp.experiment_id == by_sql and exp.lifecycle_stage == "active"
    assert exp.artifact_location == location
    assert c.create_run(by_sql).info.artifact_uri.startswith(location)
    assert embedded_experiment(cfg, "made-by-sql") == (by_sql, location)
    assert experiment_id(cfg, "made-by-sql") == by_sql
    # A deleted experiment holding the name is left to MLflow's rules (None: fall back)
    c.delete_experiment(by_sql)
    assert embedded_experiment(cfg, "made-by-sql") is None


LATE_MLFLOW = """
import sys, warnings
import nb_mlops

assert "mlflow" not in sys.modules
sys.path.insert(0, "helpers")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with nb_mlops.track(name="late", autolog=False) as run:
        nb_mlops.log(ours=1.0)
        import late_helper  # imports mlflow inside the block, then logs with its fluent API

        late_helper.report()
nb_mlops.flush()
import mlflow

print("ACTIVE", mlflow.active_run())
print("RUN", run.run_id)
for w in caught:
    print("WARNING", w.message)
"""


def test_mlflow_first_imported_inside_a_block_is_not_left_running_silently(
    project: Path,
) -> None:
    import subprocess
    import sys

    # Given helper code that imports mlflow and logs with its fluent API, and a process where
    # mlflow is not loaded when the tracked block starts
    (project / "helpers").mkdir()
    (project / "helpers" / "late_helper.py").write_text(
        "import mlflow\n\ndef report():\n    mlflow.log_metric('theirs', 2.0)\n"
    )
    # When the block calls it
    done = subprocess.run(
        [sys.executable, "-c", LATE_MLFLOW], cwd=project, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    # Then the run MLflow started by itself is ended, not left active, and a warning names it
    assert lines["ACTIVE"] == "None"
    (warned,) = [line for line in done.stdout.splitlines() if "MLflow started itself" in line]
    assert "tracked run 'late'" in warned and "import mlflow before the block" in warned
    # And the tracked run holds what nb_mlops logged, FINISHED
    stored = _client(project).get_run(lines["RUN"])
    assert stored.info.status == "FINISHED" and stored.data.metrics == {"ours": 1.0}
