"""The store seam's contract: every `TrackingBackend` call, against both implementations — the
embedded SQLite fast path and MlflowClient on a team server (`mlflow server` on PostgreSQL) — with
what each call wrote read back through MLflow's own client (`get_run`, `search_runs`)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from team_store import TeamStore, team_store

from nb_mlops.core.backend import (
    MlflowTrackingBackend,
    SqliteTrackingBackend,
    TrackingBackend,
    open_backend,
)
from nb_mlops.core.config import load_config
from nb_mlops.core.owners import (
    END_STATUS_TAG,
    INCOMPLETE_TAG,
    KILLED_REASON_TAG,
    OWNER_TAG,
    PENDING_TAG,
    owner_token,
)
from nb_mlops.core.runs import parse_order_by
from nb_mlops.core.store import ensure_store


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStore]:
    with team_store(tmp_path_factory.mktemp("backend-server")) as running:
        yield running


@pytest.fixture(params=["sqlite", "server"])
def pair(request: pytest.FixtureRequest, project: Path) -> tuple[TrackingBackend, MlflowClient]:
    """(the backend `open_backend` picks for the project, MLflow's own client on the same store)."""
    if request.param == "server":
        uri = request.getfixturevalue("server").uri
        with (project / "pyproject.toml").open("a") as config:
            config.write(f'tracking_uri = "{uri}"\nregistry_uri = "{uri}"\n')
    cfg = ensure_store(load_config())
    backend = open_backend(cfg)
    expected = SqliteTrackingBackend if request.param == "sqlite" else MlflowTrackingBackend
    assert type(backend) is expected
    return backend, MlflowClient(cfg.tracking_uri, cfg.registry_uri)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _new_run(backend: TrackingBackend, exp_id: str, location: str, **tags: str) -> str:
    run_id, _ = backend.create_run(exp_id, location, _name("run"), _now(), dict(tags))
    return run_id


def _now() -> int:
    return int(time.time() * 1000)


def _view(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """A run as MLflow reads it, in RunRecord's terms."""
    run = client.get_run(run_id)
    return {
        "run_id": run.info.run_id,
        "experiment_id": str(run.info.experiment_id),
        "name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "artifact_uri": run.info.artifact_uri,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": dict(run.data.tags),
    }


def test_experiment_is_created_once_and_found_by_name(
    pair: tuple[TrackingBackend, MlflowClient],
) -> None:
    backend, client = pair
    name = _name("exp")
    assert backend.find_experiment(name) is None
    exp_id, location = backend.experiment(name)
    assert backend.experiment(name)[0] == exp_id
    assert backend.find_experiment(name) == exp_id
    found = client.get_experiment_by_name(name)
    assert found is not None and str(found.experiment_id) == exp_id
    assert location in ("", found.artifact_location)


def test_created_run_reads_as_mlflow_reads_it(pair: tuple[TrackingBackend, MlflowClient]) -> None:
    backend, client = pair
    exp_id, location = backend.experiment(_name("exp"))
    start = _now()
    tags = {"mlflow.runName": "first", "mlflow.user": "tester", "team": "churn"}
    run_id, artifact_uri = backend.create_run(exp_id, location, "first", start, tags)
    seen = _view(client, run_id)
    assert (seen["status"], seen["name"], seen["start_time"]) == ("RUNNING", "first", start)
    assert seen["experiment_id"] == exp_id
    assert seen["artifact_uri"] == artifact_uri
    assert seen["tags"]["team"] == "churn"
    record = backend.get_run(run_id)
    assert record is not None
    assert {k: v for k, v in vars(record).items() if k != "tags"} == {
        k: v for k, v in seen.items() if k != "tags"
    }
    assert record.tags.items() >= tags.items()


def test_written_values_and_end_read_back(pair: tuple[TrackingBackend, MlflowClient]) -> None:
    backend, client = pair
    exp_id, location = backend.experiment(_name("exp"))
    run_id = _new_run(backend, exp_id, location)
    ts = _now()
    metrics = [(run_id, "loss", 0.5, ts, 0), (run_id, "loss", 0.25, ts + 1, 1)]
    backend.write(metrics, [(run_id, "C", "0.5")], [(run_id, "stage", "dev")])
    backend.write([(run_id, "acc", 0.9, ts, 0)], [], [(run_id, "stage", "prod")])
    end = _now()
    backend.end(run_id, "FINISHED", end)
    seen = _view(client, run_id)
    assert seen["metrics"] == {"loss": 0.25, "acc": 0.9}
    assert seen["params"] == {"C": "0.5"}
    assert seen["tags"]["stage"] == "prod"
    assert (seen["status"], seen["end_time"]) == ("FINISHED", end)
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.25)]
    record = backend.get_run(run_id)
    assert record is not None
    assert (record.metrics, record.params, record.status) == (
        seen["metrics"],
        seen["params"],
        "FINISHED",
    )
    assert record.tags == seen["tags"]


def test_finish_commits_values_drops_tags_and_ends(
    pair: tuple[TrackingBackend, MlflowClient],
) -> None:
    backend, client = pair
    exp_id, location = backend.experiment(_name("exp"))
    run_id = _new_run(backend, exp_id, location, **{"nb_mlops.pending": "model"})
    end = _now()
    values = ([(run_id, "acc", 0.75, end, 0)], [(run_id, "k", "3")], [(run_id, "done", "yes")])
    backend.finish(run_id, values, "FAILED", end, drop_tags=("nb_mlops.pending",))
    seen = _view(client, run_id)
    assert (seen["status"], seen["end_time"]) == ("FAILED", end)
    assert seen["metrics"] == {"acc": 0.75} and seen["params"] == {"k": "3"}
    assert seen["tags"]["done"] == "yes" and "nb_mlops.pending" not in seen["tags"]
    # status None: the values only, the run stays as it is
    backend.finish(run_id, ([], [], [(run_id, "later", "1")]), None, _now())
    assert _view(client, run_id)["tags"]["later"] == "1"
    assert _view(client, run_id)["status"] == "FAILED"


def test_unknown_run_is_none_and_refuses_writes(
    pair: tuple[TrackingBackend, MlflowClient],
) -> None:
    backend, _client = pair
    missing = uuid.uuid4().hex
    assert backend.get_run(missing) is None
    with pytest.raises(Exception, match=missing):
        backend.write([], [], [(missing, "k", "v")])


def test_runs_page_matches_search_runs(pair: tuple[TrackingBackend, MlflowClient]) -> None:
    backend, client = pair
    exp_id, location = backend.experiment(_name("exp"))
    start = _now()
    made = []
    for i in range(3):
        run_id, _ = backend.create_run(exp_id, location, f"r{i}", start + i, {})
        backend.write([(run_id, "i", float(i), start, 0)], [], [])
        made.append(run_id)
    first, more = backend.runs_page(exp_id, 2, 0)
    theirs = client.search_runs([exp_id], max_results=2)
    assert [r.run_id for r in first] == [r.info.run_id for r in theirs] == made[:0:-1]
    assert more is True
    assert [r.metrics["i"] for r in first] == [2.0, 1.0]
    rest, more = backend.runs_page(exp_id, 2, 2)
    assert [r.run_id for r in rest] == [made[0]] and more is False


def test_model_version_run(pair: tuple[TrackingBackend, MlflowClient]) -> None:
    backend, client = pair
    exp_id, location = backend.experiment(_name("exp"))
    run_id, artifact_uri = backend.create_run(exp_id, location, "model", _now(), {})
    name = _name("model")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{artifact_uri}/model", run_id=run_id)
    assert backend.model_version_run(name, str(version.version)) == run_id
    assert backend.model_version_run(name, "99") is None


def test_the_backend_is_chosen_by_the_uri(project: Path) -> None:
    """The fast path only for the project's own store at the schema revision its SQL knows; any
    other SQLite file, or a server, goes through MlflowClient."""
    with (project / "pyproject.toml").open("a") as config:
        config.write(f'tracking_uri = "sqlite:///{project / "other.db"}"\n')
    assert type(open_backend(load_config())) is MlflowTrackingBackend


def test_ordered_page_and_experiment_names(pair: tuple[TrackingBackend, MlflowClient]) -> None:
    backend, client = pair
    name = _name("exp")
    exp_id, location = backend.experiment(name)
    start = _now()
    for i, value in enumerate([0.5, float("nan"), 0.25]):
        run_id, _ = backend.create_run(exp_id, location, f"r{i}", start + i, {})
        backend.write([(run_id, "acc", value, start, 0)], [(run_id, "i", str(i))], [])
    backend.create_run(exp_id, location, "no-acc", start + 9, {})
    order = parse_order_by("metrics.acc", ascending=True)
    assert order is not None
    ours, more = backend.runs_page(exp_id, 10, 0, order)
    theirs = client.search_runs([exp_id], max_results=10, order_by=[order.mlflow_clause()])
    assert [r.run_id for r in ours] == [r.info.run_id for r in theirs]
    assert [r.name for r in ours] == ["r2", "r0", "r1", "no-acc"] and more is False
    assert name in backend.experiment_names()


def _dead_owner() -> tuple[str, int]:
    """The owner token of a process of this machine that has exited, and its pid."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    token = owner_token(proc.pid)
    proc.kill()
    proc.wait()
    return token, proc.pid


def test_kill_orphans_settles_what_dead_owners_left_and_nothing_else(
    pair: tuple[TrackingBackend, MlflowClient],
) -> None:
    backend, client = pair
    exp_id, location = backend.experiment(_name("exp"))
    dead, dead_pid = _dead_owner()
    # Given runs a dead process of this machine left: inside its block, ended with a result
    # still being saved, ended with only provenance pending
    inside = _new_run(backend, exp_id, location, **{OWNER_TAG: dead})
    lost = _new_run(
        backend,
        exp_id,
        location,
        **{OWNER_TAG: dead, PENDING_TAG: "model", END_STATUS_TAG: "FINISHED@1700000000000@model"},
    )
    late = _new_run(backend, exp_id, location, **{OWNER_TAG: dead, PENDING_TAG: "capture"})
    backend.end(late, "FINISHED", 1700000000001)
    # And RUNNING runs of a live process and of another machine
    live = _new_run(backend, exp_id, location, **{OWNER_TAG: owner_token()})
    elsewhere = _new_run(backend, exp_id, location, **{OWNER_TAG: "far.example:1:1"})
    # When the store settles orphans
    settled = backend.kill_orphans()
    # Then each dead owner's run is settled as its owner left it, read back through MLflow
    assert {inside, lost, late} <= set(settled) and not {live, elsewhere} & set(settled)
    seen = {run_id: _view(client, run_id) for run_id in (inside, lost, late, live, elsewhere)}
    assert seen[inside]["status"] == "KILLED" and seen[inside]["end_time"]
    assert seen[inside]["tags"][KILLED_REASON_TAG]
    assert (seen[lost]["status"], seen[lost]["end_time"]) == ("FAILED", 1700000000000)
    assert "saved the run's model" in seen[lost]["tags"]["nb_mlops.error"]
    assert (seen[late]["status"], seen[late]["end_time"]) == ("FINISHED", 1700000000001)
    assert seen[late]["tags"][INCOMPLETE_TAG] == "capture: never saved"
    for run_id in (lost, late):
        assert not {PENDING_TAG, END_STATUS_TAG} & set(seen[run_id]["tags"])
    assert seen[live]["status"] == seen[elsewhere]["status"] == "RUNNING"
    # And a second pass finds nothing more to do
    assert not {inside, lost, late} & set(backend.kill_orphans())
    if not backend.direct:
        # A server's outbox names the pids whose journals are still being replayed: left alone
        busy = _new_run(backend, exp_id, location, **{OWNER_TAG: dead})
        assert busy not in backend.kill_orphans(busy={dead_pid})
        assert _view(client, busy)["status"] == "RUNNING"
        assert busy in backend.kill_orphans()
