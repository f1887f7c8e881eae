"""SIGKILL at random moments of tracking, snapshots and promotion loses nothing acknowledged.

Given a warm zygote forking workers that loop over tracked runs, DataFrame and file snapshots and
promotions (acknowledging each call that returned), when each worker is SIGKILLed at a random
moment — 72 kill points — then every acknowledged run has its params, every point and its status;
every acknowledged snapshot has its manifest and verifies; the promotion journal and the registry
agree; and no lock left by a dead worker blocks the next command.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from crash_harness import MODEL, Zygote
from filelock import FileLock
from promotion_helpers import make_pipeline_run

import nb_mlops
from nb_mlops.cli import main
from nb_mlops.core import tracking
from nb_mlops.core.config import load_config
from nb_mlops.core.data.refs import open_store

KILLS = 72
FULL_CHECK_EVERY = 24


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NB_MLOPS_", "MLFLOW_"))}


class Ledger:
    """Everything the workers acknowledged, checked against the store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs: dict[str, dict[str, Any]] = {}
        self.snaps: list[dict[str, Any]] = []
        self.promotions: list[dict[str, Any]] = []

    def add(self, acks: list[dict[str, Any]]) -> None:
        for record in acks:
            if record["op"] == "run":
                self.runs[record["run_id"]] = record
            elif record["op"] == "snap":
                self.snaps.append(record)
            elif record["op"] == "promote":
                self.promotions.append(record)

    def check_quick(self, records: list[dict[str, Any]]) -> None:
        """Right after a kill: the acknowledged runs and manifests are on disk."""
        con = sqlite3.connect(self.root / ".nb_mlops" / "mlflow.db")
        try:
            for record in records:
                if record["op"] == "run":
                    self._check_run(con, record, settled=False)
        finally:
            con.close()
        store = open_store(load_config(self.root))
        for record in records:
            if record["op"] == "snap":
                manifest = store.manifest(record["name"], record["version"])
                assert manifest["digest"] == record["digest"], record

    def _check_run(self, con: sqlite3.Connection, record: dict[str, Any], settled: bool) -> None:
        run_id = record["run_id"]
        (status,) = con.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
        if settled or status != "RUNNING":
            assert status == "FINISHED", (record, status, tags)
        else:  # its owner ended it; provenance was still being saved when it was killed
            assert "nb_mlops.pending" in tags, (record, tags)
        params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
        assert params == record["params"], (record, params)
        (points,) = con.execute(
            "SELECT count(*) FROM metrics WHERE run_uuid = ? AND key = 'loss'", (run_id,)
        ).fetchone()
        assert points == record["points"], (record, points)
        latest = dict(
            con.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,))
        )
        assert latest["acc"] == record["acc"], (record, latest)

    def check_full(self) -> None:
        """Everything, after a new session has settled what dead workers left."""
        tracking._proc.stores.clear()
        tracking._store_for(load_config(self.root))  # a new session: dead owners' runs settled
        con = sqlite3.connect(self.root / ".nb_mlops" / "mlflow.db")
        try:
            for record in self.runs.values():
                self._check_run(con, record, settled=True)
            stuck = con.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()
            assert stuck == (0,), "a run of a dead worker is still RUNNING"
        finally:
            con.close()
        self.check_quick(self.snaps)
        # no lock of a dead worker blocks anyone
        for path in (self.root / ".nb_mlops" / "locks").glob("*.lock"):
            with FileLock(str(path), timeout=0):
                pass
        assert main(["data", "verify", "--all"]) == 0
        # the journal and the registry agree, and every acknowledged promotion is journaled
        if self.promotions:
            entries = nb_mlops.history(MODEL)  # settles entries a killed promotion left pending
            assert not [e for e in entries if e.state == "pending"]
            moves = [e for e in entries if e.state == "done" and e.moves_champion]
            done = {(e.to_version, e.candidate_run) for e in moves}
            for record in self.promotions:
                assert (record["version"], record["run_id"]) in done, record
            from nb_mlops.core import store

            aliases = store.client(load_config(self.root)).get_registered_model(MODEL).aliases
            assert str(aliases.get("champion")) == moves[-1].to_version


def test_random_sigkills_lose_nothing_acknowledged(project: Path, capsys: Any) -> None:
    # Given two pipeline runs to promote (no gates: every promotion of a new run passes), made
    # while the zygote imports
    setup = time.monotonic()
    zygote = Zygote(project, env=_env())
    ledger = Ledger(project)
    rnd = random.Random(20261202)
    checking = 0.0
    try:
        candidates = [make_pipeline_run(metrics={"accuracy": 0.9 + i / 100}) for i in range(2)]
        tmp = project / "candidates.tmp"
        tmp.write_text(json.dumps(candidates))
        tmp.rename(project / "candidates.json")
        (project / "acks").mkdir()
        zygote.wait_ready()
        started = time.monotonic()
        for kill in range(KILLS):
            # When a worker is killed at a random moment of its work: mostly early; every
            # eighth one lives long enough to promote (about a second each)
            window = 2.5 if kill % 8 == 7 else rnd.uniform(0.05, 0.8)
            acks = zygote.kill_after(kill, project / "acks" / f"{kill}.jsonl", window)
            assert acks and acks[0]["op"] == "start", "the worker did not start"
            records = acks[1:]
            ledger.add(records)
            # Then what it acknowledged is there
            mark = time.monotonic()
            ledger.check_quick(records)
            if kill % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1:
                ledger.check_full()
            checking += time.monotonic() - mark
    finally:
        zygote.close()
    ledger.check_full()
    with capsys.disabled():
        print(
            f"\n{KILLS} kill points: {len(ledger.runs)} runs, {len(ledger.snaps)} snapshots, "
            f"{len(ledger.promotions)} promotions acknowledged and found; "
            f"{time.monotonic() - started:.0f} s ({checking:.0f} s checking, "
            f"{started - setup:.0f} s set-up)"
        )
    # the workload reached every kind of operation
    assert ledger.runs and ledger.snaps and ledger.promotions
