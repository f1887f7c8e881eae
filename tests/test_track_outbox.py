"""Tracked cells against a team server go through the write-ahead outbox (`.nb_mlops/outbox`): the
cell returns before the server has the run, the outbox holds it until the server acknowledged it,
a process killed after a cell returned leaves it for the next process to replay (once, without
duplicating metric points), and a server that is down keeps it until a later flush. What the
server holds is read back with a plain MlflowClient. One server serves the module."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_proc import free_port
from mlflow.tracking import MlflowClient
from team_store import TeamStore, team_store

import nb_mlops
from nb_mlops.core import tracking
from nb_mlops.core.errors import StoreError
from nb_mlops.core.outbox import OUTBOX_TAG, Outbox


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStore]:
    with team_store(tmp_path_factory.mktemp("outbox-server")) as running:
        yield running


def _point(project: Path, uri: str) -> None:
    with (project / "pyproject.toml").open("a") as config:
        config.write(f'tracking_uri = "{uri}"\nregistry_uri = "{uri}"\n')


@pytest.fixture
def team(project: Path, server: TeamStore) -> Iterator[Path]:
    _point(project, server.uri)
    tracking.set_experiment("outbox")
    yield project
    tracking.set_experiment(None)


def _entries(project: Path) -> list[dict[str, Any]]:
    """Every entry in the project's outbox journals."""
    found = []
    for path in sorted((project / ".nb_mlops" / "outbox").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                found.append(json.loads(line))
    return found


def _by_key(client: MlflowClient, key: str) -> list[Any]:
    exp = client.get_experiment_by_name("outbox")
    if exp is None:
        return []
    return list(
        client.search_runs([exp.experiment_id], filter_string=f"tags.`{OUTBOX_TAG}` = '{key}'")
    )


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[float, int]]:
    return sorted((m.value, m.step) for m in client.get_metric_history(run_id, key))


def test_a_cell_returns_before_the_server_has_its_run(
    team: Path, server: TeamStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sender held back (the server gets nothing until the gate opens)
    gate = threading.Event()
    attempt = Outbox._attempt

    def held(self: Outbox, item: tuple[Any, ...]) -> str | None:
        gate.wait()
        return attempt(self, item)

    monkeypatch.setattr(Outbox, "_attempt", held)
    client = MlflowClient(server.uri)
    # When a tracked cell logs and returns
    with nb_mlops.track(name="held", autolog=False, tags={"team": "churn"}) as run:
        nb_mlops.log(acc=0.5)
        nb_mlops.log(acc=0.75, loss=0.25)
    # Then the outbox holds the run's end and values; the server has no run yet
    ends = [e for e in _entries(team) if e["key"] == run.key and e.get("end")]
    assert ends and ends[-1]["end"][0] == "FINISHED"
    logged = [m[:2] for e in _entries(team) if e["key"] == run.key for m in e.get("metrics", [])]
    assert sorted(logged) == [["acc", 0.5], ["acc", 0.75], ["loss", 0.25]]
    assert run.known_id is None and _by_key(client, run.key) == []
    # When the sender may go, and flush returns
    gate.set()
    nb_mlops.flush()
    # Then the server has the run FINISHED with every value, and the outbox is empty
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["team"] == "churn" and stored.data.tags[OUTBOX_TAG] == run.key
    assert _history(client, run.run_id, "acc") == [(0.5, 0), (0.75, 1)]
    assert _history(client, run.run_id, "loss") == [(0.25, 0)]
    assert _entries(team) == []


def test_mlflow_calls_from_helper_code_land_in_the_tracked_run(
    team: Path, server: TeamStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given helper code that logs with MLflow's fluent API, called from a block that never
    # names mlflow (the run's id is not known when the block starts: the outbox creates it)
    (tmp_path / "nb_helper_report.py").write_text(
        "import mlflow\n\ndef report():\n    mlflow.log_metric('indirect', 1.5)\n"
        "    mlflow.set_tag('via', 'helper')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import nb_helper_report

    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("outbox")
    before = client.search_runs([experiment.experiment_id]) if experiment else []
    # When the block calls it
    with nb_mlops.track(name="indirect", autolog=False) as run:
        nb_helper_report.report()
    nb_mlops.flush()
    # Then its values are in the tracked run, and no other run was started for them
    stored = client.get_run(run.run_id)
    assert stored.data.metrics == {"indirect": 1.5}
    assert stored.data.tags["via"] == "helper"
    experiment = client.get_experiment_by_name("outbox")
    after = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in after} - {r.info.run_id for r in before} == {run.run_id}


CRASH = """
import sys, time
import nb_mlops
from nb_mlops.core import outbox, tracking
from nb_mlops.core.outbox import Outbox

if MODE == "nothing sent":
    Outbox._attempt = lambda self, item: time.sleep(3600)
else:  # the run created, its values acknowledged, its end not
    requests = outbox._requests

    def partly(entry, replay=False):
        def stop(client, run_id):
            print("SENDING", flush=True)
            time.sleep(3600)

        found = requests(entry, replay)
        return found[:-1] + [stop] if entry.get("end") else found

    outbox._requests = partly
tracking.set_experiment("outbox")
with nb_mlops.track(name="crash", autolog=False) as run:
    nb_mlops.log(a=1.0)
    nb_mlops.log(a=2.0, b=3.0)
print("RETURNED", run.key, flush=True)
time.sleep(3600)
"""

REPLAY = """
from nb_mlops.core.config import load_config
from nb_mlops.core.tracking.stores import replay_outbox
print("REPLAYED", replay_outbox(load_config(), timeout=120), flush=True)
"""


def _python(code: str, project: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "NB_MLOPS_"))}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _until(proc: subprocess.Popen[str], word: str) -> list[str]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(word):
            return line.split()
    raise AssertionError(f"the process ended ({proc.wait()}) before printing {word}")


def _replay(project: Path) -> int:
    proc = _python(REPLAY, project)
    count = int(_until(proc, "REPLAYED")[1])
    assert proc.wait(timeout=120) == 0
    return count


@pytest.mark.parametrize("mode", ["nothing sent", "partly sent"])
def test_a_process_killed_after_a_cell_returned_is_replayed_once(
    team: Path, server: TeamStore, mode: str
) -> None:
    # Given a process killed right after a tracked cell returned, before its end was sent
    proc = _python(f"MODE = {mode!r}\n" + CRASH, team)
    try:
        key = _until(proc, "RETURNED")[1]
        if mode == "partly sent":
            _until(proc, "SENDING")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    client = MlflowClient(server.uri)
    assert [e for e in _entries(team) if e["key"] == key and e.get("end")]
    # When the next process of the project replays its outbox
    assert _replay(team) >= 1
    # Then the server has the run FINISHED with exactly the values logged
    (found,) = _by_key(client, key)
    stored = client.get_run(found.info.run_id)
    assert stored.info.status == "FINISHED"
    assert _history(client, found.info.run_id, "a") == [(1.0, 0), (2.0, 1)]
    assert _history(client, found.info.run_id, "b") == [(3.0, 0)]
    assert _entries(team) == []
    # And a second replay finds nothing and changes nothing
    assert _replay(team) == 0
    assert len(_by_key(client, key)) == 1
    assert _history(client, found.info.run_id, "a") == [(1.0, 0), (2.0, 1)]


INSIDE = """
import time
import nb_mlops
from nb_mlops.core import tracking

tracking.set_experiment("outbox")
with nb_mlops.track(name="inside", autolog=False) as run:
    nb_mlops.log(a=1.0)
    nb_mlops.flush()  # the server has the run and its value
    print("INSIDE", run.run_id, flush=True)
    time.sleep(3600)
"""


def test_a_process_killed_inside_a_tracked_block_leaves_a_killed_run_not_a_running_one(
    team: Path, server: TeamStore
) -> None:
    # Given a process killed inside a tracked block, its run RUNNING on the server
    proc = _python(INSIDE, team)
    try:
        run_id = _until(proc, "INSIDE")[1]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    client = MlflowClient(server.uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    # And one killed after its block returned, before the server had the block's end
    proc = _python("MODE = 'partly sent'\n" + CRASH, team)
    try:
        key = _until(proc, "RETURNED")[1]
        _until(proc, "SENDING")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    (ended,) = _by_key(client, key)
    assert ended.info.status == "RUNNING"
    # When the next process of the project opens the store
    _replay(team)
    # Then the first is KILLED with the reason; the second has the end its owner recorded
    stored = client.get_run(run_id)
    assert stored.info.status == "KILLED" and stored.info.end_time
    assert "died" in stored.data.tags["nb_mlops.killed_reason"]
    assert _history(client, run_id, "a") == [(1.0, 0)]
    replayed = client.get_run(ended.info.run_id)
    assert replayed.info.status == "FINISHED"
    assert "nb_mlops.killed_reason" not in replayed.data.tags


class _Proxy:
    """A TCP proxy on 127.0.0.1 in front of the server, that can go down and come back."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit("//", 1)[1].split(":")
        self.target = (host, int(port))
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of its thread
        self.listener.close()
        for conn in self.conns:
            conn.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                inner, _ = listener.accept()
            except OSError:
                return
            outer = socket.create_connection(self.target)
            self.conns += [inner, outer]
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()


def test_a_server_down_at_cell_end_keeps_the_outbox_until_it_answers(
    project: Path, server: TeamStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a project whose server goes through a proxy that can go down
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    proxy = _Proxy(server.uri)
    _point(project, proxy.uri)
    tracking.set_experiment("outbox")
    try:
        with nb_mlops.track(name="before", autolog=False):
            nb_mlops.log(x=1.0)
        nb_mlops.flush()
        # When the server is down at the end of the next cell
        proxy.down()
        with nb_mlops.track(name="down", autolog=False) as run:
            nb_mlops.log(x=2.0)
        # Then the cell returned; the outbox keeps the entry; flush says the server did not take it
        assert [e for e in _entries(project) if e["key"] == run.key and e.get("end")]
        with pytest.raises(StoreError, match=re.escape(proxy.uri)):
            nb_mlops.flush()
        assert [e for e in _entries(project) if e["key"] == run.key and e.get("end")]
        # When the server is back, a flush sends it
        proxy.up()
        for _ in range(3):  # what failed while it was down (the run's capture) is raised once
            try:
                nb_mlops.flush()
                break
            except StoreError:
                continue
        stored = MlflowClient(server.uri).get_run(run.run_id)
        assert stored.info.status == "FINISHED"
        assert _history(MlflowClient(server.uri), run.run_id, "x") == [(2.0, 0)]
        assert _entries(project) == []
    finally:
        tracking.set_experiment(None)
        proxy.down()
