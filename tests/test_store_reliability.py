"""Reliability of the tracking store: real processes against one SQLite store."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from nb_mlops.core import tracking
from nb_mlops.core.errors import StoreError, StoreUnavailable


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / '.nb_mlops' / 'mlflow.db'}")


def _spawn(root: Path, code: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {**os.environ, "NB_MLOPS_ROOT": str(root), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root,
        env=full,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _use_default_experiment(root: Path) -> None:
    # The template's experiment 0: workers find it with one SELECT and never import mlflow
    # (eight mlflow imports on two cores would dominate the test's time).
    (root / "pyproject.toml").write_text('[tool.nb_mlops]\nexperiment = "Default"\n')


def _wait_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]


WORKER = """
import sys, time
from pathlib import Path
go = Path("go")
while not go.exists():
    time.sleep(0.005)
import nb_mlops
from nb_mlops.core import tracking
worker = int(sys.argv[1]) if len(sys.argv) > 1 else {i}
for n in range({runs}):
    with nb_mlops.track(name=f"w{i}-r{{n}}", autolog=False) as run:
        run.log_params({{f"p{{k}}": k * n for k in range(5)}})
        nb_mlops.log(**{{f"m{{k}}": k + n for k in range(5)}})
tracking.flush()
"""


def test_eight_processes_open_a_new_store_at_once(project: Path, tmp_path: Path) -> None:
    # Given 8 processes released at the same instant on a project with no store and no cached
    # schema template (each would otherwise run MLflow's migrations)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    _use_default_experiment(project)
    procs = [_spawn(project, WORKER.format(i=i, runs=1), env) for i in range(8)]
    time.sleep(1.0)
    (project / "go").touch()
    _wait_all(procs)
    # Then all of them worked, the schema is complete and at head
    runs = _client(project).search_runs(
        [e.experiment_id for e in _client(project).search_experiments()]
    )
    assert sorted(r.info.run_name for r in runs) == sorted(f"w{i}-r0" for i in range(8))
    assert all(r.info.status == "FINISHED" for r in runs)
    con = sqlite3.connect(project / ".nb_mlops" / "mlflow.db")
    tmp_tables = con.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp%'"
    ).fetchall()
    revision = con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert tmp_tables == []
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config as cfg

    head = ScriptDirectory.from_config(cfg(f"sqlite:///{project}/x.db")).get_current_head()
    assert revision == head


def test_eight_processes_times_fifty_runs_all_complete(project: Path) -> None:
    _use_default_experiment(project)
    procs = [_spawn(project, WORKER.format(i=i, runs=50)) for i in range(8)]
    (project / "go").touch()
    _wait_all(procs)
    client = _client(project)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exp_ids, max_results=1000)
    assert len(runs) == 400
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        n = int(run.info.run_name.split("-r")[1])
        assert run.data.params == {f"p{k}": str(k * n) for k in range(5)}
        assert run.data.metrics == {f"m{k}": float(k + n) for k in range(5)}


def _hold_write_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    code = f"""
    import sqlite3, time
    con = sqlite3.connect({str(db)!r}, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep({seconds})
    con.execute("COMMIT")
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_value_logged_while_the_store_is_locked_lands(project: Path) -> None:
    # Given a tracked run, and another process holding SQLite's write lock longer than the
    # connection's busy timeout (5 s)
    import nb_mlops

    with nb_mlops.track(name="locked", autolog=False) as run:
        tracking.flush()  # the run's start and capture are saved: only the metric meets the lock
        holder = _hold_write_lock(project / ".nb_mlops" / "mlflow.db", 7)
        nb_mlops.log(auc=0.77)
    # When the run ends and we flush: the writer retried until the lock went away
    tracking.flush()
    holder.wait(timeout=60)
    got = _client(project).get_run(run.run_id)
    assert got.data.metrics == {"auc": 0.77} and got.info.status == "FINISHED"


def test_lock_outlasting_the_retry_window_fails_visibly(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NB_MLOPS_WRITE_RETRY_SECONDS", "0.5")
    import nb_mlops

    # the block's end cannot commit: the cell itself raises (never a silent FINISHED)
    with (
        pytest.raises(StoreError, match=r"was not saved: 1 value\(s\) .*locked"),
        nb_mlops.track(name="lost?", autolog=False) as run,
    ):
        tracking.flush()  # the run's start and capture are saved: only the metric meets the lock
        holder = _hold_write_lock(project / ".nb_mlops" / "mlflow.db", 7)
        nb_mlops.log(auc=0.5)
    holder.wait(timeout=60)
    tracking.flush()  # the run is marked FAILED once the lock is gone
    got = _client(project).get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.metrics == {}
    assert "were not saved" in got.data.tags["nb_mlops.error"]


@pytest.mark.parametrize("where", ["environment", "config"])
def test_unreachable_tracking_server_is_one_clear_error(
    project: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    if where == "environment":
        monkeypatch.setenv("NB_MLOPS_TRACKING_URI", uri)
    else:
        with (project / "pyproject.toml").open("a") as config:
            config.write(f'tracking_uri = "{uri}"\n')
    import nb_mlops

    with (
        pytest.raises(StoreUnavailable, match=f"tracking server {uri} is unreachable") as caught,
        nb_mlops.track(name="never"),
    ):
        pass
    # it says how to get back to the embedded store, wherever the URI came from
    assert "remove `tracking_uri`" in str(caught.value) and "NB_MLOPS_TRACKING_URI" in str(
        caught.value
    )
    assert "\n" not in str(caught.value)
    assert tracking.active_run_id() is None


def test_runs_of_a_dead_kernel_are_marked_killed_by_the_next_session(project: Path) -> None:
    # Given one process that dies inside a tracked run, and one that is alive inside another
    dies = _spawn(
        project,
        """
        import os, nb_mlops
        from nb_mlops.core import tracking
        with nb_mlops.track(name="dead", autolog=False):
            nb_mlops.log(x=1)
            tracking.flush()
            os._exit(9)
        """,
    )
    dies.wait(timeout=120)
    client = _client(project)
    assert {r.info.run_name: r for r in client.search_runs(["1"])}["dead"].info.status == "RUNNING"
    # When a new session (another process) opens the store and runs
    alive = _spawn(
        project,
        """
        import sys, nb_mlops
        from nb_mlops.core import tracking
        with nb_mlops.track(name="alive", autolog=False):
            tracking.flush()
            print("running", flush=True)
            sys.stdin.readline()
        """,
    )
    assert alive.stdout is not None and alive.stdout.readline().strip() == "running"
    # and then this one too
    with __import__("nb_mlops").track(name="next", autolog=False):
        pass
    tracking.flush()
    # Then the dead kernel's run is KILLED (its flushed metric kept); the live one is untouched
    by_name = {r.info.run_name: r for r in client.search_runs(["1"])}
    assert by_name["dead"].info.status == "KILLED"
    assert by_name["dead"].data.metrics == {"x": 1.0}
    assert by_name["alive"].info.status == "RUNNING"
    alive.communicate("\n", timeout=120)
    assert client.get_run(by_name["alive"].info.run_id).info.status == "FINISHED"
