"""A BLOCKED promotion on the command line says what happened and names the command that shows
the journal with the model's name (`nb-mlops history MODEL`), which runs as printed."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from promotion_helpers import make_pipeline_run, set_gates

from nb_mlops.cli import main


def test_blocked_promotion_names_the_history_command_of_the_model(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given gates the candidate fails
    set_gates(project, 'metrics = { accuracy = ">= 0.99" }')
    run_id = make_pipeline_run()
    # When it is promoted from the command line
    assert main(["promote", run_id, "--model", "churn-model"]) == 1
    printed = capsys.readouterr()
    assert printed.err.startswith("error: BLOCKED: 1 gate(s) failed")
    # Then the hint after the gate table names the model, and its command works as printed
    hint = next(line for line in printed.out.splitlines() if "stays as it was" in line)
    assert hint.startswith("BLOCKED: the champion of churn-model stays as it was")
    command = hint.split("`")[1]
    assert command == "nb-mlops history churn-model"
    assert main(shlex.split(command)[1:]) == 0
    assert "blocked" in capsys.readouterr().out
