"""Dask workers that run in folders of their own, without the project: steps are shipped to them,
values go through the shared data store and tracking to the team's MLflow server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import moto_server
import pytest
from team_store import TeamStore, team_store

import nb_mlops
from nb_mlops.core import session, tracking
from nb_mlops.core.errors import PipelineError
from nb_mlops.pipeline import build_pipeline, run_pipeline
from nb_mlops.pipeline import shipped as shipped_module
from tests.nbutil import new_notebook

# the moto server standing in for S3 (without moto, its test fails for want of the fixture)
with contextlib.suppress(pytest.skip.Exception):
    from tests.test_data_s3 import endpoint  # noqa: F401

STEPS = ("make", "use", "report")
AWS = moto_server.AWS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStore]:
    with team_store(tmp_path_factory.mktemp("team-server")) as running:
        yield running


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _worker_env() -> dict[str, str]:
    """This environment without the project's variables; only the package on the Python path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_MLOPS_", "MLFLOW_"))}
    env["PYTHONPATH"] = str(Path(nb_mlops.__file__).resolve().parent.parent)
    env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
    return {**env, **AWS}  # the credentials of the S3 stand-in, as a worker would have its own


def _scheduler(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    log = folder / "scheduler.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
            + ["--port", "0", "--no-dashboard"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        found = re.search(r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop([proc])
            raise RuntimeError(f"the scheduler did not start:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """A scheduler and two workers, each in its own folder, none of which is the project's."""
    env = _worker_env()
    scheduler, address = _scheduler(tmp_path_factory.mktemp("scheduler"), env)
    procs, folders = [scheduler], []
    try:
        for i in range(2):
            folder = tmp_path_factory.mktemp(f"worker{i}")
            folders.append(folder)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address]
                    + ["--nthreads", "1", "--no-dashboard", "--local-directory", str(folder)],
                    cwd=folder,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            )
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address.replace("tcp://", "dask://"), folders
    finally:
        _stop(procs)


@pytest.fixture
def team(project: Path, server: TeamStore, tmp_path: Path) -> Iterator[Path]:
    """The project tracked on the team server, its data store a shared folder."""
    shared = tmp_path / "shared-data"
    with (project / "pyproject.toml").open("a") as config:
        config.write(f'tracking_uri = "{server.uri}"\ndata_store = "{shared}"\n')
    session.clear()
    tracking.set_experiment(None)
    yield project
    tracking.flush()
    tracking.set_experiment(None)
    session.clear()


def _pipeline(project: Path) -> None:
    new_notebook(
        project / "remote.ipynb",
        [
            ("n: int = 4", ["parameters"]),
            (
                "import pandas as pd\nframe = pd.DataFrame({'a': list(range(n))})\n"
                "%snapshot frame -n frame\nbase = n * 2",
                ["step:make"],
            ),
            (
                "%restore frame --as back\ntotal = int(back['a'].sum()) + base",
                ["step:use"],
            ),
            ("import nb_mlops\nscore = total / 10\nnb_mlops.log(score=score)", ["step:report"]),
            ("print(total, score)", ["pipeline-metrics"]),
        ],
    )
    build_pipeline(project / "remote.ipynb")


def _recorded(uri: str, run_id: str) -> dict[str, object]:
    """The parent run's params and metrics and each child run's, as the team server has them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri, uri)
    parent = client.get_run(run_id)
    found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    children = {r.data.tags["nb_mlops.step"]: r for r in found}

    def shown(run: object) -> tuple[dict[str, str], dict[str, float], str]:
        data = run.data  # type: ignore[attr-defined]
        metrics = {k: v for k, v in data.metrics.items() if k != "duration_s"}
        return data.params, metrics, run.info.status  # type: ignore[attr-defined]

    return {"parent": shown(parent), **{s: shown(r) for s, r in children.items()}}


def test_remote_workers_record_what_a_local_run_records(
    team: Path, server: TeamStore, cluster: tuple[str, list[Path]], tmp_path: Path
) -> None:
    # Given a three-step pipeline (values between steps, a snapshot restored, a logged metric)
    _pipeline(team)
    address, worker_folders = cluster
    local = run_pipeline("remote", {"n": 5}, cache=False)
    assert local.status == "SUCCEEDED", local.error
    # When it runs on workers in folders of their own
    remote = run_pipeline("remote", {"n": 5}, executor=address, cache=False)
    # Then it succeeds and the team server has the same runs, parameters and metrics
    assert remote.status == "SUCCEEDED", remote.error
    assert remote.metrics["total"] == local.metrics["total"] == 20.0
    assert _recorded(server.uri, remote.run_id) == _recorded(server.uri, local.run_id)
    assert set(_recorded(server.uri, remote.run_id)) == {"parent", *STEPS}
    # the values went through the shared store, the workers kept no project folder
    shared = tmp_path / "shared-data" / "runs" / remote.run_id / "values"
    assert all((shared / step / "values.pkl").is_file() for step in STEPS)
    assert not [p for f in worker_folders for p in f.rglob(".nb_mlops")]
    # and the executed notebooks and values are in the project's run folder
    for step in STEPS:
        notebook = remote.run_dir / f"{step}.ipynb"
        assert notebook.is_file() and '"execution_count"' in notebook.read_text()
        assert (remote.run_dir / "values" / step / "_done.json").is_file()


def test_a_data_store_workers_cannot_reach_is_a_clear_error(
    project: Path, cluster: tuple[str, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given workers that do not see the project folder, and a data store inside that folder
    new_notebook(project / "alone.ipynb", ["x = 1"])
    build_pipeline(project / "alone.ipynb")
    monkeypatch.setattr(shipped_module, "_workers_see", lambda client, folder, address: False)
    # Then the run stops with one line saying what to configure
    with pytest.raises(PipelineError, match=r"cannot see this project's folder .* data_store"):
        run_pipeline("alone", executor=cluster[0])


@pytest.fixture
def s3_team(
    project: Path, server: TeamStore, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, str]]:
    """The project tracked on the team server, its data store a bucket of the S3 stand-in."""
    pytest.importorskip("s3fs")
    import boto3

    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="nbm-dask-remote")
    with (project / "pyproject.toml").open("a") as config:
        config.write(
            f'tracking_uri = "{server.uri}"\ndata_store = "s3://nbm-dask-remote/team"\n'
            f'data_store_endpoint = "{endpoint}"\n'
        )
    session.clear()
    tracking.set_experiment(None)
    yield project, endpoint
    tracking.flush()
    tracking.set_experiment(None)
    session.clear()


def test_remote_workers_pass_values_through_an_s3_store(
    s3_team: tuple[Path, str], server: TeamStore, cluster: tuple[str, list[Path]]
) -> None:
    import boto3

    project, endpoint = s3_team
    _pipeline(project)
    run = run_pipeline("remote", {"n": 5}, executor=cluster[0], cache=False)
    assert run.status == "SUCCEEDED", run.error
    assert run.metrics["total"] == 20.0
    assert set(_recorded(server.uri, run.run_id)) == {"parent", *STEPS}
    listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(
        Bucket="nbm-dask-remote", Prefix=f"team/runs/{run.run_id}/values/"
    )
    keys = {o["Key"].split("/")[-2] for o in listed.get("Contents", [])}
    assert keys == set(STEPS)
    assert not [p for f in cluster[1] for p in f.rglob(".nb_mlops")]


def test_values_changed_in_the_shared_store_are_refused(tmp_path: Path) -> None:
    from nb_mlops.core.errors import IntegrityError
    from nb_mlops.pipeline.reads import file_digest
    from nb_mlops.pipeline.valuestore import ValueStore, shared_location

    # Given a step's values put in a shared folder store
    made = tmp_path / "made"
    made.mkdir()
    (made / "values.pkl").write_bytes(b"the values")
    entry = {"digest": file_digest(made / "values.pkl"), "size": 10}
    marker = {"files": {"values.pkl": entry}}
    store = ValueStore(str(tmp_path / "shared"), {}, "r1")
    store.put("make", made, marker)
    assert store.has("make", marker)
    store.get("make", tmp_path / "back", marker)
    assert (tmp_path / "back" / "values.pkl").read_bytes() == b"the values"
    # When its bytes change there, a read refuses them
    (tmp_path / "shared" / "runs" / "r1" / "values" / "make" / "values.pkl").write_bytes(
        b"other byte"
    )
    with pytest.raises(IntegrityError, match="values of step 'make' .* do not match"):
        store.get("make", tmp_path / "again", marker)
    assert not (tmp_path / "again" / "values.pkl").exists()
    # and only stores other machines can reach count as shared
    root = tmp_path / "proj"
    assert shared_location({"data_store": "s3://b/p/"}, root) == "s3://b/p"
    assert shared_location({"data_store": str(root / ".nb_mlops" / "data")}, root) is None
    assert shared_location({"data_store": "relative/data"}, root) is None
    assert shared_location({}, root) is None
