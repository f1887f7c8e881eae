"""`nb-mlops runs` and `nb-mlops ui` against a real embedded store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from runs_store import fill

from nb_mlops.cli import main
from nb_mlops.core.config import load_config
from nb_mlops.core.runs import runs


@pytest.fixture
def filled(project: Path) -> Path:
    cfg = load_config()
    fill(cfg, "exp", 14)
    fill(cfg, "older", 2, base=1_600_000_000_000)
    return project


def test_runs_json_is_the_page_the_api_gives(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the CLI prints the second page by accuracy as JSON
    first = runs("exp", metric="acc", limit=5)
    code = main(
        [
            "runs",
            "-e",
            "exp",
            "--metric",
            "acc",
            "-n",
            "5",
            "--page-token",
            str(first.next_page_token),
            "--json",
        ]
    )
    # Then it is the API's second page, with the documented keys, and valid JSON (no NaN)
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    second = runs("exp", metric="acc", limit=5, page_token=first.next_page_token)
    assert printed == json.loads(json.dumps(second.to_dict()))
    assert set(printed) >= {"experiment", "experiment_id", "order_by", "next_page_token", "runs"}
    assert printed["offset"] == 5 and len(printed["runs"]) == 5


def test_runs_table_defaults_to_the_latest_experiment(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "--limit", "3", "--sort", "run_name", "--asc"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "experiment 'exp': runs 1–3, by run_name ascending, more on the next page"
    )
    assert "run-0" in out and "next page: --page-token" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["runs", "-e", "nope"],
            "error: experiment 'nope' not found; known experiments: Default, exp, older",
        ),
        (["runs", "--page-token", "zz"], "error: invalid page token 'zz'"),
        (["runs", "--sort", "attributes.size"], "error: cannot sort by attribute 'size'"),
        (["runs", "-m", "acc", "-s", "status"], "give --metric or --sort, not both"),
        (["runs", "-n", "0"], "0 is not in the range 1<=x<=50000"),
    ],
)
def test_runs_mistakes_exit_non_zero_with_one_line(
    filled: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) != 0
    assert message in capsys.readouterr().err


def test_help_on_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("runs", "ui"):
        assert main([command, "--help"]) == 0
        assert "Example: nb-mlops" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ui_serves_the_project_store_on_localhost(
    filled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a project with runs, `nb-mlops ui` started on a free port
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "NB_MLOPS_"))}
    cli = Path(sys.executable).with_name("nb-mlops")
    proc = subprocess.Popen(
        [str(cli), "ui", "--port", str(port)],
        cwd=filled,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the server's workers are stopped with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        found = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                url = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=exp"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    found = json.load(reply)
                break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        # Then the MLflow API on that port answers from this project's store
        assert found is not None and found["experiment"]["name"] == "exp"
        exp_id = found["experiment"]["experiment_id"]
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [exp_id], "max_results": 100}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            served = {run["info"]["run_id"] for run in json.load(reply)["runs"]}
        assert served == {row.run_id for row in runs("exp", limit=100)}
        # And with that server as the tracking URI, runs() pages through MLflow's REST API alike
        local = runs("exp", metric="acc", limit=6)
        monkeypatch.setenv("NB_MLOPS_TRACKING_URI", base)
        remote = runs("exp", metric="acc", limit=6)
        assert remote.source == "mlflow"
        # the same page, its links pointing at the server read (its UI) instead of the default
        mine, theirs = local.to_dict(), remote.to_dict()
        assert all(row.pop("url").startswith(f"{base}/") for row in theirs["runs"])
        assert all(row.pop("url").startswith("http://127.0.0.1:5000/") for row in mine["runs"])
        assert theirs == mine
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # no stray ./mlruns or mlflow.db outside the store
        assert not (filled / "mlruns").exists() and not (filled / "mlflow.db").exists()
