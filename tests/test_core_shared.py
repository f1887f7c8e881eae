"""The core's shared pieces: whole-file writes, journal lines, who acts, and batched MLflow writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import nb_mlops
from nb_mlops.core import tracking
from nb_mlops.core.config import load_config
from nb_mlops.core.files import append_line, write_atomic
from nb_mlops.core.promotion.journal import Journal, JournalEntry
from nb_mlops.core.user import current_user
from nb_mlops.core.writer import log_batch


@pytest.mark.parametrize("durable", [False, True])
def test_write_atomic_replaces_the_file_and_leaves_no_temp_file(
    tmp_path: Path, durable: bool
) -> None:
    # Given a file in a folder that does not exist yet, written once
    path = tmp_path / "a" / "b" / ("x" * 250)  # a name at the file system's limit
    write_atomic(path, b"old", durable=durable)
    # When it is written again
    write_atomic(path, b"new", durable=durable)
    # Then it holds the new bytes only, and nothing else is in its folder
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_line_appended_after_a_torn_line_starts_on_its_own_line(tmp_path: Path) -> None:
    # Given a journal whose last line a killed writer left torn
    path = tmp_path / "j" / "log.jsonl"
    append_line(path, b'{"n": 1}\n')
    with path.open("ab") as fh:
        fh.write(b'{"n": ')
    # When a line is appended
    append_line(path, b'{"n": 2}\n')
    # Then the whole lines read back, the torn one apart
    assert path.read_bytes().splitlines() == [b'{"n": 1}', b'{"n": ', b'{"n": 2}']


def test_every_record_of_who_acts_honours_nb_mlops_user(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the Jupyter server's user in NB_MLOPS_USER
    monkeypatch.setenv("NB_MLOPS_USER", "alice@example.org")
    assert current_user() == "alice@example.org"
    # When a run is tracked and a promotion journal entry is written
    with nb_mlops.track(name="who") as run:
        nb_mlops.log(x=1.0)
    tracking.flush()
    journal = Journal(load_config(), "m")
    journal.append(JournalEntry.new("blocked", "m", state="done"))
    # Then both name that user
    got = MlflowClient(load_config().tracking_uri).get_run(run.run_id)
    assert got.data.tags["mlflow.user"] == "alice@example.org"
    assert got.info.user_id == "alice@example.org"
    assert json.loads(journal.path.read_text().splitlines()[-1])["who"] == "alice@example.org"


def test_log_batch_stores_more_values_than_one_mlflow_request_takes(project: Path) -> None:
    from mlflow.entities import Metric, Param, RunTag

    # Given a run, and more params, tags and metrics than MLflow's per-request limits
    client = MlflowClient(load_config().tracking_uri)
    run_id = client.create_run(client.create_experiment("batch")).info.run_id
    params = [Param(f"p{i}", str(i)) for i in range(250)]
    tags = [RunTag(f"t{i}", str(i)) for i in range(120)]
    metrics = [Metric("loss", 1.0 / (i + 1), 0, i) for i in range(2_100)]
    # When they are logged in one call
    log_batch(client, run_id, metrics, params, tags)
    # Then every one is stored
    got = client.get_run(run_id).data
    assert got.params == {f"p{i}": str(i) for i in range(250)}
    assert {f"t{i}" for i in range(120)} <= set(got.tags)
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(2_100))
