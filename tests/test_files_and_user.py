"""The core's shared pieces: whole-file writes, journal lines, and who acts."""

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
