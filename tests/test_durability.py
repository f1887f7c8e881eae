"""What a call reports is stored: block ends commit, exits wait, kills lose nothing acknowledged.

Given real processes (scripts, a kernel) writing to a real store, when they end normally, are killed
right after a tracked block, or run out of disk, then every acknowledged value is there, a run is
never FINISHED with a result missing, a failure shows in the block that caused it (or in the exit
status), and the next session never marks KILLED a run its owner ended.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sandbox
from mlflow.tracking import MlflowClient

import nb_mlops
from nb_mlops.core import session, tracking
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import DataError, NbMlopsError, StoreError


@pytest.fixture(autouse=True)
def _fresh_session() -> Any:
    session.clear()
    yield
    tracking.flush()
    session.clear()


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / '.nb_mlops' / 'mlflow.db'}")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NB_MLOPS_", "MLFLOW_"))}


def _script(root: Path, code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _db_rows(root: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(root / ".nb_mlops" / "mlflow.db")
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _next_session(root: Path) -> None:
    """What a new kernel does first: open the store (and settle runs of dead owners)."""
    tracking._proc.stores.clear()
    tracking._store_for(load_config(root))


# --- process exit waits -----------------------------------------------------------------------


def test_a_script_exiting_right_after_snapshots_and_a_tracked_fit_loses_nothing(
    project: Path,
) -> None:
    # Given a script that snapshots frames of 10 to 300k rows and fits a tracked model, then
    # exits at once (no wait, no flush)
    done = _script(
        project,
        """
        import numpy as np, pandas as pd, nb_mlops
        from sklearn.linear_model import LogisticRegression
        for rows in (10, 20, 5_000, 300_000):
            frame = pd.DataFrame({"a": np.arange(rows), "b": np.arange(rows) * 0.5})
            print(nb_mlops.snapshot(frame, f"rows{rows}").ref, flush=True)
        X = np.random.RandomState(0).randn(200, 3); y = (X[:, 0] > 0).astype(int)
        with nb_mlops.track(name="fit") as run:
            model = LogisticRegression().fit(X, y)
        print(run.run_id, "|".join(run.pending), flush=True)
        """,
    )
    # Then it exits 0 after storing everything it acknowledged
    assert done.returncode == 0, done.stderr[-2000:]
    from nb_mlops.core.data import snapshots, verify

    assert [s.ref for s in snapshots()] == [
        f"rows{n}@v1" for n in sorted((10, 20, 5_000, 300_000), key=str)
    ]
    assert verify(everything=True) == []
    run_id, pending = done.stdout.splitlines()[-1].split(" ", 1)
    assert "model" in pending.split("|")  # the block returned while its model was being saved
    got = _client(project).get_run(run_id)
    assert got.info.status == "FINISHED"
    assert "nb_mlops.pending" not in got.data.tags
    models = _client(project).search_logged_models([got.info.experiment_id])
    assert [m.source_run_id for m in models] == [run_id]


def test_a_write_failing_at_exit_makes_the_exit_status_1_with_a_message(project: Path) -> None:
    # Given a script whose DataFrame snapshot cannot be written (a file-size limit: a full disk)
    done = _script(
        project,
        """
        import resource, signal
        import numpy as np, pandas as pd
        from nb_mlops.core.data import frames, snapshot
        frames._TARGET_CHUNK_BYTES = 64 << 20
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        snap = snapshot(pd.DataFrame({"x": np.random.default_rng(0).standard_normal(1_000_000)}), "big")
        print("TAKEN", snap.ref, flush=True)
        """,
    )
    # Then the exit waits for it, says what was lost, and the status is non-zero
    assert done.stdout.strip() == "TAKEN big@v1"
    assert done.returncode == 1, done.stderr
    assert "error: nb_mlops: big@v1 was not stored: no space left" in done.stderr
    assert "cannot schedule new futures" not in done.stderr


def test_flush_is_public_and_raises_what_failed(project: Path) -> None:
    assert "flush" in nb_mlops.__all__
    with nb_mlops.track(name="ok", autolog=False) as run:
        pass
    nb_mlops.flush()
    run.run_id = "0" * 32  # the writer meets a run that does not exist
    run.log(x=1.0)
    with pytest.raises(StoreError, match="could not save"):
        nb_mlops.flush()
    nb_mlops.flush()  # reported once


# --- the end of a block is committed ------------------------------------------------------------


def test_kill_right_after_a_block_keeps_every_point_and_its_status(project: Path) -> None:
    # Given a script killed (SIGKILL) the moment its tracked block of 20 000 points returned
    done = _script(
        project,
        """
        import os, signal, nb_mlops
        with nb_mlops.track(name="curve", autolog=False) as run:
            run.log_params({"lr": 0.1})
            for i in range(20_000):
                nb_mlops.log(loss=1 / (i + 1))
        print(run.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    assert done.returncode == -signal.SIGKILL
    run_id = done.stdout.strip()
    # Then every point, the param and the end are there
    assert _db_rows(project, "SELECT count(*) FROM metrics WHERE run_uuid = ?", run_id) == [
        (20_000,)
    ]
    # And the next session leaves it FINISHED (at most its provenance is marked incomplete)
    _next_session(project)
    got = _client(project).get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"lr": "0.1"} and got.data.metrics["loss"] == 1 / 20_000
    assert "nb_mlops.killed_reason" not in got.data.tags


PENDING_RESULT = """
import os, signal, threading, nb_mlops
from nb_mlops.core import tracking
from nb_mlops.core.config import load_config
gate = threading.Event()
with nb_mlops.track(name="slow-model", autolog=False) as run:
    nb_mlops.log(acc=0.9)
    # a model still being saved when the block ends (it never finishes: the process is killed)
    tracking._store_for(load_config()).writer.call(gate.wait, "model of " + run.run_id)
print(run.run_id, "|".join(run.pending), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_whose_model_never_landed_is_failed_by_the_next_session_never_killed(
    project: Path,
) -> None:
    done = _script(project, PENDING_RESULT)
    run_id, pending = done.stdout.strip().split(" ", 1)
    assert "model" in pending.split("|")
    # Before the next session: the run shows it waits for its model, with its metric committed
    got = _client(project).get_run(run_id)
    assert got.info.status == "RUNNING" and got.data.metrics == {"acc": 0.9}
    assert "model" in got.data.tags["nb_mlops.pending"]
    _next_session(project)
    got = _client(project).get_run(run_id)
    assert got.info.status == "FAILED"
    assert "ended before it saved the run's model" in got.data.tags["nb_mlops.error"]
    assert "nb_mlops.pending" not in got.data.tags and "nb_mlops.killed_reason" not in got.data.tags
    assert got.info.end_time is not None


def test_a_run_its_owner_is_still_saving_is_left_alone(project: Path) -> None:
    # Given a live process whose ended run still saves its model
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PENDING_RESULT.replace("os.kill(os.getpid(), signal.SIGKILL)", "input()"),
        ],
        cwd=project,
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().split()[0]
    # When another session opens the store
    _next_session(project)
    # Then the run keeps waiting for its owner
    assert _client(project).get_run(run_id).info.status == "RUNNING"
    proc.kill()
    proc.wait()


# --- disk full during tracking ----------------------------------------------------------------

FILL = """
import json, sys
import nb_mlops
from nb_mlops.core import tracking
from nb_mlops.core.errors import NbMlopsError
{limit}
out = {{"raised": None}}
try:
    with nb_mlops.track(name="full", autolog=False) as run:
        for i in range(5000):
            nb_mlops.log(loss=1.0 / (i + 1), acc=i / 5000)
except NbMlopsError as exc:
    out["raised"] = str(exc)
out["run_id"] = run.run_id
print(json.dumps(out), flush=True)
"""

RLIMIT = """
import os, resource, signal
db = os.path.join(".nb_mlops", "mlflow.db")
size = max(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + (64 << 10), size + (64 << 10)))
"""


def _prepared_store(project: Path) -> None:
    """A store with its schema and experiment, closed and checkpointed: the child only logs."""
    with nb_mlops.track(name="warm", autolog=False):
        pass
    tracking.flush()
    tracking._proc.stores.clear()
    con = sqlite3.connect(project / ".nb_mlops" / "mlflow.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


@pytest.mark.parametrize("disk", ["tmpfs", "file-size limit"])
def test_disk_full_during_a_block_fails_that_block_and_never_reads_finished(
    project: Path, disk: str
) -> None:
    # Given a store on a disk that fills up while a block logs 10 000 points
    _prepared_store(project)
    store_dir = project / ".nb_mlops"
    if disk == "tmpfs":
        reason = sandbox.unavailable()
        if reason:
            print(f"skipped: {reason}")
            pytest.skip(reason)
        used = sum(p.stat().st_size for p in store_dir.rglob("*") if p.is_file())
        done = sandbox.run(
            [sys.executable, "-c", FILL.format(limit="")],
            [sandbox.Mount.small_disk(store_dir, used // 1024 + 96)],
            cwd=project,
            env=_env(),
            keep=store_dir,
        )
        inspected = project / "inspect"
        inspected.mkdir()
        os.replace(Path(f"{store_dir}.after"), inspected / ".nb_mlops")
    else:
        done = subprocess.run(
            [sys.executable, "-c", FILL.format(limit=RLIMIT)],
            cwd=project,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        inspected = project
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Then the block itself raised, naming what was not saved
    assert out["raised"] and "was not saved" in out["raised"], (out, done.stderr[-1500:])
    # And the run is not FINISHED: FAILED once space allowed, else still RUNNING (then its
    # owner is gone and the next session settles it), never FINISHED with points missing
    rows = _db_rows(inspected, "SELECT status FROM runs WHERE run_uuid = ?", out["run_id"])
    points = _db_rows(inspected, "SELECT count(*) FROM metrics WHERE run_uuid = ?", out["run_id"])
    assert rows[0][0] in ("FAILED", "RUNNING") and points[0][0] < 10_000, (rows, points)
    # A process whose last writes failed exits non-zero, saying so
    if rows[0][0] == "RUNNING":
        assert done.returncode == 1 and "error: nb_mlops:" in done.stderr


# --- read-your-writes and bytes_added --------------------------------------------------------


def test_one_process_reads_its_own_run_right_after_the_block(project: Path) -> None:
    # Given a tracked fit whose model is still being saved when the block returns
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.random.RandomState(0).randn(100, 3)
    y = (X[:, 0] > 0).astype(int)
    with nb_mlops.track(name="fresh") as run:
        model = LogisticRegression().fit(X, y)
        nb_mlops.log(accuracy=model.score(X, y))
    # When the same process lists its runs at once
    page = nb_mlops.runs(metric="accuracy")
    # Then it sees the run with its metric and its final status
    rows = {r.run_id: r for r in page}
    assert rows[run.run_id].status == "FINISHED"
    assert rows[run.run_id].metrics["accuracy"] == model.score(X, y)
    assert run.pending == []


def test_mlops_runs_magic_right_after_track_sees_the_run(project: Path, capsys: Any) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nb_mlops")
    ip.run_cell("import nb_mlops")
    ip.run_cell("%%track -n seen --no-autolog\nnb_mlops.log(accuracy=0.93)")
    ip.run_line_magic("mlops", "runs --metric accuracy")
    out = capsys.readouterr().out
    assert "seen" in out and "FINISHED" in out and "0.93" in out


def test_listed_first_versions_report_the_bytes_they_added(project: Path, capsys: Any) -> None:
    import pandas as pd

    from nb_mlops.cli import main
    from nb_mlops.core.data import snapshots
    from nb_mlops.core.data.refs import open_store

    snap = nb_mlops.snapshot(pd.DataFrame({"a": range(50_000)}), "big", wait=True)
    recorded = open_store(load_config()).manifest("big", 1)["bytes_added"]
    assert recorded > 0 and snap.bytes_added == recorded
    assert [s.bytes_added for s in snapshots("big")] == [recorded]
    assert main(["data", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["bytes_added"] == recorded
    assert main(["data", "show", "big@v1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes_added"] == recorded
    # an unchanged snapshot added nothing
    again = nb_mlops.snapshot(pd.DataFrame({"a": range(50_000)}), "big")
    assert (again.new, again.bytes_added) == (False, 0)


def test_errors_raised_by_flush_are_nb_mlops_errors(project: Path) -> None:
    assert issubclass(StoreError, NbMlopsError) and issubclass(DataError, NbMlopsError)


# --- a kernel and a pipeline step end with their writes stored ----------------------------------

STEP_CELLS: list[Any] = [
    (
        "import numpy as np, pandas as pd, nb_mlops\n"
        "from sklearn.linear_model import LogisticRegression",
        ["imports"],
    ),
    (
        "%%track -n fit\n"
        "X = np.random.RandomState(0).randn(200, 3); y = (X[:, 0] > 0).astype(int)\n"
        "model = LogisticRegression().fit(X, y)\n"
        "snap = nb_mlops.snapshot(pd.DataFrame({'a': np.arange(50_000)}), DATA)",
        ["step:train"],
    ),
]


def _assert_model_never_lost(root: Path, run: Any) -> None:
    """FINISHED with its model; or, had the kernel been killed while saving it, FAILED naming
    the model: never KILLED, never FINISHED without it."""
    models = _client(root).search_logged_models([run.info.experiment_id])
    mine = [m for m in models if m.source_run_id == run.info.run_id]
    if run.info.status == "FINISHED":
        assert mine, "FINISHED without its model"
    else:
        assert run.info.status == "FAILED", run.info.status
        error = run.data.tags["nb_mlops.error"]
        assert "process ended before it saved the run's" in error and "model" in error


def test_a_kernel_and_a_pipeline_step_store_what_they_acknowledged_before_exiting(
    project: Path,
) -> None:
    from nbutil import execute, new_notebook

    from nb_mlops.core.data import snapshots
    from nb_mlops.pipeline import build_pipeline, run_pipeline

    # Given a notebook whose last cell fits a tracked model and snapshots a frame, run in a
    # kernel that is shut down as soon as the cell returns
    interactive = new_notebook(
        project / "kernel.ipynb", ["%load_ext nb_mlops", "DATA = 'kernel-data'", *STEP_CELLS]
    )
    execute(interactive)
    # Then the kernel's exit stored the snapshot and the run (with its model)
    _next_session(project)
    runs = _client(project).search_runs(
        [e.experiment_id for e in _client(project).search_experiments()]
    )
    (fit,) = [r for r in runs if r.info.run_name == "fit"]
    _assert_model_never_lost(project, fit)
    assert "kernel-data@v1" in [s.ref for s in snapshots()]

    # And a pipeline step doing the same stores both before the runner ends its run
    step_nb = new_notebook(
        project / "steps.ipynb", [("DATA = 'step-data'", ["parameters"]), *STEP_CELLS]
    )
    build_pipeline(step_nb)
    result = run_pipeline("steps", cache=False)
    assert result.succeeded, result.error
    assert "step-data@v1" in [s.ref for s in snapshots()]
    nested = _client(project).search_runs(
        [result.experiment_id], filter_string="attributes.run_name = 'fit'"
    )
    step_fits = [r for r in nested if r.data.tags.get("nb_mlops.mode") == "pipeline"]
    assert len(step_fits) == 1
    assert step_fits[0].info.status == "FINISHED"
    _assert_model_never_lost(project, step_fits[0])
