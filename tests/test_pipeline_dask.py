"""The Dask executor against a real scheduler and two real worker processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nb_mlops.core.errors import PipelineError
from nb_mlops.pipeline import build_pipeline, run_pipeline
from tests.nbutil import new_notebook

BIN = Path(sys.executable).parent


@pytest.fixture
def cluster(tmp_path: Path):
    """`dask scheduler` on a free port and two `dask worker` processes; stopped by pid."""
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    log = tmp_path / "scheduler.log"
    sink = open(log, "w")  # noqa: SIM115 - the scheduler writes to it while the test runs
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
            ],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
            start_new_session=True,
        )
    ]
    try:
        address = None
        deadline = time.monotonic() + 60
        while address is None:
            assert procs[0].poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            found = re.search(r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)", log.read_text())
            address = found.group(1) if found else None
            time.sleep(0.2)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--nworkers",
                        "1",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            )
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield address.replace("tcp://", "dask://")
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        sink.close()


def test_dask_executor_runs_steps_on_the_cluster(project: Path, cluster: str) -> None:
    # Given a pipeline with two independent branches that record which process ran them
    new_notebook(
        project / "dk.ipynb",
        [
            ("n: int = 3", ["parameters"]),
            ("import os\nleft = n * 2\nleft_pid = os.getppid()", ["step:left"]),
            ("import os\nright = n * 5\nright_pid = os.getppid()", ["step:right"]),
            ("total = left + right\nworkers = len({left_pid, right_pid})", ["step:join"]),
            ("print(total, workers)", ["pipeline-metrics"]),
        ],
    )
    build_pipeline(project / "dk.ipynb")
    # When it runs on the Dask cluster
    run = run_pipeline("dk", {"n": 4}, executor=cluster)
    # Then every step ran there (kernels are children of worker processes, not of this one)
    assert run.status == "SUCCEEDED", run.error
    assert run.metrics["total"] == 28.0
    assert all(not s.cached for s in run.steps.values())
    import psutil

    assert run.metrics["workers"] in (1.0, 2.0)
    assert os.getpid() not in {p.pid for p in psutil.Process().children(recursive=True)}


def test_unreachable_scheduler_is_a_clear_error(project: Path) -> None:
    new_notebook(project / "dk2.ipynb", ["x = 1"])
    build_pipeline(project / "dk2.ipynb")
    with pytest.raises(PipelineError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_pipeline("dk2", executor="dask://127.0.0.1:9")
    with pytest.raises(PipelineError, match="unknown executor 'k8s://x'"):
        run_pipeline("dk2", executor="k8s://x")


def test_workers_that_do_not_answer_are_a_clear_error_not_a_hang(
    project: Path, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    from nb_mlops.pipeline import shipped

    new_notebook(project / "dk3.ipynb", ["x = 1"])
    build_pipeline(project / "dk3.ipynb")
    # Given every worker of the cluster stopped (alive to the scheduler, answering nothing)
    port = cluster.rsplit(":", 1)[1]
    workers = [
        p
        for p in psutil.Process().children()
        if "worker" in p.cmdline() and any(port in arg for arg in p.cmdline())
    ]
    assert len(workers) == 2
    monkeypatch.setattr(shipped, "PROBE_TIMEOUT", 2.0)
    for worker in workers:
        os.killpg(worker.pid, signal.SIGSTOP)
    try:
        # When a pipeline runs there, Then it stops with one line saying what to check
        with pytest.raises(PipelineError, match=r"did not answer within 2 s .* every worker"):
            run_pipeline("dk3", executor=cluster)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGCONT)
