"""Reliability with real processes: concurrent promotions of one model, and a promotion
SIGKILLed between moving the alias and writing the journal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from promotion_helpers import journal_lines, make_pipeline_run

from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.promotion import history, promote


def _cli(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nb_mlops.cli", *args],
        cwd=project,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _aliases(model: str) -> dict[str, str]:
    return {
        k: str(v)
        for k, v in store.client(load_config()).get_registered_model(model).aliases.items()
    }


def test_two_processes_promoting_at_once_are_serialised(project: Path) -> None:
    # Given two successful pipeline runs
    first, second = make_pipeline_run(), make_pipeline_run()
    # When two processes promote them to the same model at the same time
    procs = [
        _cli(project, "promote", run, "--model", "m", "--reason", run) for run in (first, second)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    # Then the journal has both, in order, each starting from the champion the other left
    entries = history("m")
    assert [(e.action, e.state) for e in entries] == [("promote", "done"), ("promote", "done")]
    assert entries[0].from_version is None
    assert entries[1].from_version == entries[0].to_version
    assert {e.candidate_run for e in entries} == {first, second}
    # And the final alias is the journal's last entry; previous-champion is the one before
    assert _aliases("m") == {
        "champion": entries[1].to_version,
        "previous-champion": entries[0].to_version,
    }


@pytest.mark.parametrize(
    ("point", "state", "champion"),
    [
        ("after-alias", "done", "2"),
        # "between-aliases" covers "before-alias" too: it also undoes the moved previous-champion
        ("between-aliases", "aborted", "1"),
    ],
)
def test_sigkill_around_the_alias_move_is_reconciled(
    project: Path, point: str, state: str, champion: str
) -> None:
    # Given a champion v1
    first, second = make_pipeline_run(), make_pipeline_run()
    promote(first, model="m")
    # When promoting v2 is SIGKILLed at `point`
    proc = _cli(project, "promote", second, "--model", "m", env={"NB_MLOPS_FAULT": point})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert journal_lines(project, "m")[-1]["state"] == "pending"  # the write-ahead record is there
    # Then the next read settles it against the alias actually set, and both agree
    entries = history("m")
    last = entries[-1]
    assert (last.state, last.recovered, last.to_version) == (state, True, "2")
    aliases = _aliases("m")
    assert aliases["champion"] == champion
    moves = [e for e in entries if e.state == "done" and e.moves_champion]
    assert moves[-1].to_version == champion
    # previous-champion is what a completed move leaves, or what it was before an aborted one
    assert aliases.get("previous-champion") == ("1" if state == "done" else None)
    # And a new promotion afterwards works normally from the settled state
    if state == "aborted":
        promote(second, model="m")
        assert _aliases("m") == {"champion": "2", "previous-champion": "1"}
