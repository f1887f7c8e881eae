"""Stopping a pipeline run from outside, for real: Ctrl-C (SIGINT to the runner's process group,
as a terminal sends it), SIGTERM, kill -9 of the runner, a KeyboardInterrupt in the `%pipeline`
magic. Each time: the running step stops at once, no kernel (nor what it started) outlives the
runner, the MLflow runs end KILLED (by the runner, or by the next command when it was killed),
and `--resume` takes the run up, reusing the steps that finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from nb_mlops.cli import main
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import PipelineError
from nb_mlops.pipeline import build_pipeline, run_pipeline
from tests.crashutil import alive, descendants, runs_by_status, wait_gone
from tests.nbutil import new_notebook

# the middle step starts a process of its own, then waits in its cell up to 60 s (until `go`)
SLOW_CELLS = [
    ("n: int = 1", ["parameters"]),
    ("a = n + 1", ["step:first"]),
    (
        "import pathlib, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "pathlib.Path('grandchild.pid').write_text(str(child.pid))\n"
        "pathlib.Path('in_cell').write_text('')\n"
        "deadline = time.time() + 60\n"
        "while not pathlib.Path('go').exists() and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "child.kill()\n"
        "b = a * 2",
        ["step:second"],
    ),
    ("c = b + 1", ["step:third"]),
    ("print(c)", ["pipeline-metrics"]),
]
BOUND = 15.0  # generous: a stop takes well under a second (benchmarks/bench_interrupt.py)


@pytest.fixture
def slow(project: Path) -> Path:
    new_notebook(project / "slow.ipynb", SLOW_CELLS)
    build_pipeline(project / "slow.ipynb")
    return project


def _wait_for(
    path: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc is None or proc.poll() is None, "the runner ended before its step ran"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _cli(project: Path, *args: str) -> subprocess.Popen[bytes]:
    """`nb-mlops ARGS` in a session of its own, as a shell starts a foreground command."""
    return subprocess.Popen(
        [sys.executable, "-m", "nb_mlops.cli", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _step_runs(run_id: str) -> dict[str, str]:
    """step name → MLflow status of the step runs of pipeline run `run_id`."""
    import sqlite3

    con = sqlite3.connect(load_config().db_path)
    rows = con.execute(
        "SELECT s.value, r.status FROM runs r "
        "JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'mlflow.parentRunId' AND p.value = ? "
        "JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'nb_mlops.step'",
        (run_id,),
    ).fetchall()
    return dict(rows)


def _resume_completes(project: Path, run_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "go").write_text("")
    capsys.readouterr()
    assert main(["pipeline", "run", "slow", "--resume", run_id, "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["status"] == "SUCCEEDED" and resumed["metrics"] == {"c": 5.0}
    assert resumed["steps"]["first"]["cell"] == "resumed"  # reused, digests verified
    assert not resumed["steps"]["second"]["cached"]


@pytest.mark.parametrize("how", ["SIGINT to the group", "SIGTERM"])
def test_ctrl_c_stops_a_running_step_at_once_and_leaves_the_run_resumable(
    slow: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a runner whose second step is inside a cell that would last 60 s
    status = slow / "status.json"
    proc = _cli(slow, "pipeline", "run", "slow", "--status-file", str(status))
    _wait_for(slow / "in_cell", proc)
    tree = descendants(proc.pid)
    grandchild = psutil.Process(int((slow / "grandchild.pid").read_text()))
    assert grandchild in tree
    # When the terminal's Ctrl-C reaches the runner's process group (or SIGTERM the runner)
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    # Then it stops at once with the shell's status for that signal, naming how to resume
    try:
        proc.wait(BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the runner was still running {BOUND:g} s after {how}")
    assert proc.returncode == (143 if how == "SIGTERM" else 130)
    state = json.loads(status.read_text())
    run_id = state["run_id"]
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert f"nb-mlops pipeline run slow --resume {run_id}" in err
    # nothing it started is left: kernels, the zygote, the step's own process
    assert wait_gone(tree, BOUND) == []
    # the run and its running step are KILLED in MLflow, the finished step is not
    assert runs_by_status(load_config().db_path)[run_id] == "KILLED"
    assert _step_runs(run_id) == {"first": "FINISHED", "second": "KILLED"}
    assert state["status"] == "CANCELLED"
    assert {k: v["status"] for k, v in state["steps"].items()} == {
        "first": "SUCCEEDED",
        "second": "CANCELLED",
        "third": "CANCELLED",
    }
    # When it is resumed, it completes: the finished step is reused, the others run
    _resume_completes(slow, run_id, capsys)


@pytest.mark.parametrize("kernels", ["forked", "launched"])
def test_kill_9_of_the_runner_leaves_no_process_and_the_next_run_settles_and_resumes_it(
    slow: Path, kernels: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a runner (kernels forked from its zygote, or launched) inside its second step
    if kernels == "launched":
        monkeypatch.setenv("NB_MLOPS_FORK_KERNELS", "0")
    status = slow / "status.json"
    proc = _cli(slow, "pipeline", "run", "slow", "--status-file", str(status))
    _wait_for(slow / "in_cell", proc)
    run_id = json.loads(status.read_text())["run_id"]
    tree = descendants(proc.pid)
    assert len(tree) >= 2  # a kernel and the step's own process, at least
    # a run still in progress cannot be resumed (its owner lives)
    with pytest.raises(PipelineError, match="still running"):
        run_pipeline("slow", resume=run_id)
    # When the runner is killed with SIGKILL (no clean-up of its own)
    proc.kill()
    proc.wait()
    # Then every process it started dies with it
    assert wait_gone(tree, BOUND) == []
    # and its runs stay RUNNING until the next command looks
    assert runs_by_status(load_config().db_path)[run_id] == "RUNNING"
    if kernels == "forked":
        # When the next command is any pipeline command, Then it marks them KILLED
        assert main(["pipeline", "show", "slow", "--json"]) == 0
        assert runs_by_status(load_config().db_path)[run_id] == "KILLED"
    # When the next command resumes it
    _resume_completes(slow, run_id, capsys)
    # Then the killed run and its step runs were marked KILLED (the finished one stays FINISHED)
    assert runs_by_status(load_config().db_path)[run_id] == "KILLED"
    assert _step_runs(run_id) == {"first": "FINISHED", "second": "KILLED"}
    state = json.loads((load_config().runs_dir / "slow" / run_id / "state.json").read_text())
    assert state["status"] == "CANCELLED" and "runner died" in state["error"]
    assert "RUNNING" not in runs_by_status(load_config().db_path).values()


def test_opening_the_tracking_store_marks_a_killed_runners_runs_killed(slow: Path) -> None:
    # Given a runner killed with SIGKILL inside its second step
    status = slow / "status.json"
    proc = _cli(slow, "pipeline", "run", "slow", "--status-file", str(status))
    _wait_for(slow / "in_cell", proc)
    run_id = json.loads(status.read_text())["run_id"]
    proc.kill()
    proc.wait()
    assert runs_by_status(load_config().db_path)[run_id] == "RUNNING"
    # When another process opens the tracking store (a tracked block)
    script = "import nb_mlops\nwith nb_mlops.track(name='next'):\n    pass\n"
    subprocess.run([sys.executable, "-c", script], cwd=slow, check=True, timeout=120)
    # Then the dead runner's runs are KILLED
    assert runs_by_status(load_config().db_path)[run_id] == "KILLED"
    assert _step_runs(run_id) == {"first": "FINISHED", "second": "KILLED"}


def test_a_keyboard_interrupt_in_the_pipeline_magic_stops_the_run_the_same_way(
    slow: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from nb_mlops.magics.pipeline import PipelineMagics
    from nb_mlops.pipeline.runner import PipelineInterrupted

    ip = InteractiveShell.instance()
    ip.register_magics(PipelineMagics)

    # Given `%pipeline run` in a notebook, interrupted (Jupyter's interrupt button) while its
    # second step is in its 60 s cell
    def interrupt_when_in_cell() -> None:
        _wait_for(slow / "in_cell")
        import _thread

        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_in_cell, daemon=True).start()
    started = time.monotonic()
    # When the interrupt arrives, the magic raises KeyboardInterrupt at once
    with pytest.raises(KeyboardInterrupt) as info:
        ip.run_line_magic("pipeline", "run slow")
    assert time.monotonic() - started < 60 - 5, "it waited for the cell to end"
    # Then the run is CANCELLED and resumable, its MLflow runs KILLED, no kernel is left
    assert isinstance(info.value, PipelineInterrupted)
    stopped = info.value.run
    assert stopped.status == "CANCELLED" and stopped.steps["second"].status == "CANCELLED"
    assert runs_by_status(load_config().db_path)[stopped.run_id] == "KILLED"
    assert _step_runs(stopped.run_id) == {"first": "FINISHED", "second": "KILLED"}
    grandchild = psutil.Process(int((slow / "grandchild.pid").read_text()))
    assert wait_gone([grandchild], BOUND) == []
    kernels = [p for p in descendants(os.getpid()) if "ipykernel" in " ".join(p.cmdline())]
    assert alive(wait_gone(kernels, BOUND)) == []
    _resume_completes(slow, stopped.run_id, capsys)


def test_an_unreadable_state_is_one_clear_error(project: Path) -> None:
    # Given a finished run whose state file a machine crash left empty
    new_notebook(project / "one.ipynb", [("x = 1", ["step:only"])])
    build_pipeline(project / "one.ipynb")
    run = run_pipeline("one")
    (run.run_dir / "state.json").write_text("")
    # When it is resumed, Then one line says what is wrong and what to do
    with pytest.raises(PipelineError, match="cannot be read .* run the pipeline afresh"):
        run_pipeline("one", resume=run.run_id)
