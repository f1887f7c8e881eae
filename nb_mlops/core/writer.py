"""The background writer: one thread per store persists what tracked code logs, in batches.

`log()` only appends a tuple to a queue (microseconds); the thread turns runs of queued values into
one transaction each. On the embedded store it writes MLflow's tables directly with `sqlite3` (MLflow's
own `log_batch` persists ≈ 4-8k points/s and `create_run` costs ≈ 8 ms); on a server it calls
`MlflowClient.log_batch`. Nothing is dropped silently: a write that keeps failing is reported by
`flush()`, or by the run's end.

A run's end is synchronous (`finish_run`): the caller takes the run's values still queued and commits
them with the status in one transaction (a WAL commit: it survives a killed process), and raises
what could not be saved. Slow work queued for the run may still be running then — results (the
model, training metrics) or provenance (notebook and environment capture, dataset inputs): the run
stays RUNNING with tags `nb_mlops.pending` (what) and `nb_mlops.end_status` (how it ended) until that
work is done. A later session that finds its owner dead marks it FAILED when a result was never
saved, else gives it the status it ended with and `nb_mlops.incomplete`: never FINISHED with a
result missing, never KILLED when its owner ended it.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nb_mlops.core.errors import StoreError, TrackingError
from nb_mlops.core.owners import (
    END_STATUS_TAG,
    INCOMPLETE_TAG,
    PENDING_TAG,
    orphan_outcome,
    owner_alive,
    owner_token,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "END_STATUS_TAG",
    "INCOMPLETE_TAG",
    "PENDING_TAG",
    "SCHEMA_REVISION",
    "ClientBackend",
    "SqliteBackend",
    "Writer",
    "log_batch",
    "owner_token",
]

# The MLflow schema revision these SQL statements were written against (MLflow 3.17). Any other
# revision makes the embedded store fall back to MlflowClient (slower, always correct).
SCHEMA_REVISION = "dc11669786a5"
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
_MAX_FLOAT = 1.7976931348623157e308
_BATCH = 20_000
# the thread lets a few values gather before writing them (unless other work is queued): a short
# block's values are then committed once, by its end, instead of racing it for the database
_LINGER_SECONDS = 0.02
_LINGER_ITEMS = 1_000

Metric = tuple[str, str, float, int, int]  # run_id, key, value, timestamp_ms, step
Pair = tuple[str, str, str]  # run_id, key, value


class Backend(Protocol):
    """What the writer writes through: the store seam `core.backend.TrackingBackend` extends it."""

    def write(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None: ...

    def end(self, run_id: str, status: str, end_ms: int) -> None: ...

    def finish(
        self,
        run_id: str,
        values: tuple[list[Metric], list[Pair], list[Pair]],
        status: str | None,
        end_ms: int,
        drop_tags: tuple[str, ...] = (),
    ) -> None: ...


class SqliteBackend:
    """Direct writes into the embedded store's MLflow tables (one connection per thread)."""

    def __init__(self, db_path: Path, busy_timeout: float = 5.0) -> None:
        self.db_path = db_path
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        # threads of this process take turns here, in microseconds; SQLite's own busy handler
        # (for other processes) sleeps 1 ms and more per collision
        self._tx_lock = threading.Lock()

    @staticmethod
    def compatible(db_path: Path) -> bool:
        try:
            con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
            try:
                row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == SCHEMA_REVISION

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(
                str(self.db_path), timeout=self.busy_timeout, isolation_level=None
            )
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    @contextlib.contextmanager
    def _tx(self) -> Any:
        con = self._con()
        with self._tx_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                # SQLite rolls back by itself on some errors (a full disk): never mask the cause
                if con.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def experiment(self, name: str) -> tuple[str, str] | None:
        """(experiment_id, artifact_location) of an active experiment, or None."""
        row = (
            self._con()
            .execute(
                "SELECT experiment_id, artifact_location FROM experiments "
                "WHERE name = ? AND lifecycle_stage = 'active'",
                (name,),
            )
            .fetchone()
        )
        return None if row is None else (str(row[0]), str(row[1]))

    def create_run(
        self,
        run_id: str,
        experiment_id: str,
        artifact_location: str,
        name: str,
        start_ms: int,
        tags: dict[str, str],
    ) -> None:
        with self._tx() as con:
            con.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
                "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
                "artifact_uri, experiment_id, deleted_time) "
                "VALUES (?, ?, 'NOTEBOOK', ?, '', ?, 'RUNNING', ?, NULL, '', 'active', ?, ?, NULL)",
                (
                    run_id,
                    name,
                    tags.get("mlflow.source.name", "")[:500],
                    tags.get("mlflow.user", ""),
                    start_ms,
                    f"{artifact_location.rstrip('/')}/{run_id}/artifacts",
                    int(experiment_id),
                ),
            )
            con.executemany(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v[:MAX_TAG_VALUE], run_id) for k, v in tags.items()],
            )

    def write(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None:
        with self._tx() as con:
            self._write_in(con, metrics, params, tags)

    def finish(
        self,
        run_id: str,
        values: tuple[list[Metric], list[Pair], list[Pair]],
        status: str | None,
        end_ms: int,
        drop_tags: tuple[str, ...] = (),
    ) -> None:
        """One transaction: a run's last values, then (unless `status` is None) its end, with
        `drop_tags` removed. A WAL commit: it survives the process being killed."""
        metrics, params, tags = values
        with self._tx() as con:
            self._write_in(con, metrics, params, tags, also={run_id})
            if drop_tags:
                marks = ",".join("?" * len(drop_tags))
                con.execute(
                    f"DELETE FROM tags WHERE run_uuid = ? AND key IN ({marks})",
                    (run_id, *drop_tags),
                )
            if status is not None:
                con.execute(
                    "UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?",
                    (status, end_ms, run_id),
                )

    def _write_in(
        self,
        con: sqlite3.Connection,
        metrics: list[Metric],
        params: list[Pair],
        tags: list[Pair],
        also: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        rows = [_metric_row(m) for m in metrics]
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        for row in rows:
            key = (row[0], row[3])
            best = latest.get(key)
            # MLflow's rule: the latest value is the one with the greatest (step, timestamp, value)
            if best is None or (row[4], row[2], row[1]) >= (best[4], best[2], best[1]):
                latest[key] = row
        self._check_active(
            con, {m[0] for m in metrics} | {p[0] for p in params} | {t[0] for t in tags} | also
        )
        if rows:
            con.executemany(
                "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            con.executemany(
                "INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key, run_uuid) DO UPDATE SET "
                "value = excluded.value, timestamp = excluded.timestamp, step = excluded.step,"
                " is_nan = excluded.is_nan WHERE (excluded.step, excluded.timestamp, "
                "excluded.value) >= (latest_metrics.step, latest_metrics.timestamp, "
                "latest_metrics.value)",
                list(latest.values()),
            )
        if params:
            con.executemany(
                "INSERT OR IGNORE INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v[:MAX_PARAM_VALUE], r) for r, k, v in params],
            )
        if tags:
            con.executemany(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v[:MAX_TAG_VALUE], r) for r, k, v in tags],
            )

    @staticmethod
    def _check_active(con: sqlite3.Connection, run_ids: set[str]) -> None:
        """MLflow refuses writes to missing or deleted runs; so do we (SQLite does not check)."""
        if not run_ids:
            return
        marks = ",".join("?" * len(run_ids))
        found = dict(
            con.execute(
                f"SELECT run_uuid, lifecycle_stage FROM runs WHERE run_uuid IN ({marks})",
                tuple(run_ids),
            ).fetchall()
        )
        for run_id in sorted(run_ids):
            if found.get(run_id) != "active":
                state = "is deleted" if run_id in found else "does not exist"
                raise TrackingError(f"run {run_id} {state}")

    def end(self, run_id: str, status: str, end_ms: int) -> None:
        with self._tx() as con:
            self._check_active(con, {run_id})
            con.execute(
                "UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?",
                (status, end_ms, run_id),
            )

    def kill_orphans(self) -> list[str]:
        """Settle the runs whose owning process (tag `nb_mlops.owner`) died before it was done.

        A run its owner never ended (the process died inside the block) becomes KILLED. A run its
        owner ended while part of its results (the model, training metrics) was still being saved
        is RUNNING with `nb_mlops.pending`: it becomes FAILED (or KILLED, as it ended), and
        `nb_mlops.error` names what was never saved. A run ended with only provenance pending
        (capture, dataset inputs) keeps its status; `nb_mlops.incomplete` names what is missing.
        """
        rows = (
            self._con()
            .execute(
                "SELECT r.run_uuid, r.status, o.value, p.value, e.value FROM runs r "
                "JOIN tags o ON o.run_uuid = r.run_uuid AND o.key = 'nb_mlops.owner' "
                "LEFT JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = ? "
                "LEFT JOIN tags e ON e.run_uuid = r.run_uuid AND e.key = ? "
                "WHERE r.status = 'RUNNING' OR p.value IS NOT NULL",
                (PENDING_TAG, END_STATUS_TAG),
            )
            .fetchall()
        )
        dead = [row for row in rows if not owner_alive(row[2])]
        now = int(time.time() * 1000)
        for run_id, current, _owner, pending, ended in dead:
            final, end_ms, tags = orphan_outcome(current, pending, ended, now)
            with self._tx() as con:
                # only as found: its owner may have settled it meanwhile after all
                con.execute(
                    "UPDATE runs SET status = ?, end_time = coalesce(end_time, ?) "
                    "WHERE run_uuid = ? AND status = ?",
                    (final, end_ms, run_id, current),
                )
                if con.execute("SELECT changes()").fetchone()[0]:
                    self._write_in(con, [], [], [(run_id, k, v) for k, v in tags.items()])
                    con.execute(
                        "DELETE FROM tags WHERE run_uuid = ? AND key IN (?, ?)",
                        (run_id, PENDING_TAG, END_STATUS_TAG),
                    )
        return [row[0] for row in dead]


def _metric_row(m: Metric) -> tuple[str, float, int, str, int, int]:
    run_id, key, value, ts, step = m
    value = float(value)
    if math.isnan(value):
        return (key, 0.0, ts, run_id, step, 1)
    if math.isinf(value):
        value = math.copysign(_MAX_FLOAT, value)
    return (key, value, ts, run_id, step, 0)


def log_batch(
    client: MlflowClient, run_id: str, metrics: list[Any], params: list[Any], tags: list[Any]
) -> None:
    """`MlflowClient.log_batch` in requests within MLflow's limits: 1000 metrics, 100 params and
    100 tags each (entities of `mlflow.entities`)."""
    for i in range(0, max(len(params), len(tags)), 100):
        client.log_batch(run_id, params=params[i : i + 100], tags=tags[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


class ClientBackend:
    """Writes through MlflowClient (a tracking server, or a schema this module does not know)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def write(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None:
        from nb_mlops.core.store import import_mlflow

        import_mlflow()  # this is the writer's thread: the package first (see import_mlflow)
        from mlflow.entities import Metric as MetricEntity
        from mlflow.entities import Param, RunTag

        by_run: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
        for run_id, key, value, ts, step in metrics:
            by_run.setdefault(run_id, ([], [], []))[0].append(
                MetricEntity(key, float(value), ts, step)
            )
        for run_id, key, text in params:
            by_run.setdefault(run_id, ([], [], []))[1].append(Param(key, text[:MAX_PARAM_VALUE]))
        for run_id, key, text in tags:
            by_run.setdefault(run_id, ([], [], []))[2].append(RunTag(key, text[:MAX_TAG_VALUE]))
        for run_id, (ms, ps, ts_) in by_run.items():
            log_batch(self.client, run_id, ms, ps, ts_)

    def end(self, run_id: str, status: str, end_ms: int) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_ms)

    def finish(
        self,
        run_id: str,
        values: tuple[list[Metric], list[Pair], list[Pair]],
        status: str | None,
        end_ms: int,
        drop_tags: tuple[str, ...] = (),
    ) -> None:
        """The run's last values, then its end: each acknowledged by the server before return."""
        self.write(*values)
        for key in drop_tags:
            with contextlib.suppress(Exception):  # absent already: nothing to drop
                self.client.delete_tag(run_id, key)
        if status is not None:
            self.end(run_id, status, end_ms)


class _Barrier:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Writer:
    """A queue and the daemon thread that drains it into a backend.

    Args:
        backend: where values go.
        retry_seconds: how long a write refused because the database is locked is retried before
            it is reported as failed (by `finish_run`, or the next `flush()`).
    """

    def __init__(self, backend: Backend, retry_seconds: float = 120.0) -> None:
        self.backend = backend
        self.retry_seconds = retry_seconds
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._urgent = threading.Event()  # a call, an end or a barrier is queued: no lingering
        self._errors: list[str] = []
        self._errors_lock = threading.Lock()
        # held while values are taken off the queue and written, by the thread or a run's end:
        # a run's end never commits before values of that run the thread holds in hand
        self._write_lock = threading.Lock()
        # run id → (what, is it a result) of its queued or running calls
        self._calls: dict[str, list[tuple[str, bool]]] = {}
        self._bound = threading.local()  # per thread: the tracked runs open there, innermost last
        self._call_failures: dict[str, list[tuple[str, bool]]] = {}
        self._lost: dict[str, str] = {}  # run id → values of it a background write lost
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="nb_mlops-writer", daemon=True)
        self._thread.start()

    # --- producer side (any thread) -----------------------------------------------------------
    def metric(self, run_id: str, key: str, value: float, ts: int, step: int) -> None:
        queue = self._queue
        queue.append(("m", run_id, key, value, ts, step))
        if not self._wake.is_set():
            self._wake.set()
        if len(queue) >= _LINGER_ITEMS and not self._urgent.is_set():
            self._urgent.set()  # enough for a batch: no more lingering

    def metrics(self, items: Iterable[tuple[str, str, float, int, int]]) -> None:
        self._queue.extend(("m", *item) for item in items)
        self._wake.set()
        if len(self._queue) >= _LINGER_ITEMS:
            self._urgent.set()

    def param(self, run_id: str, key: str, value: str) -> None:
        self._put(("p", run_id, key, value))

    def tag(self, run_id: str, key: str, value: str) -> None:
        self._put(("t", run_id, key, value))

    def values(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None:
        """Queue a batch; on the writer thread itself (inside a `call`), write it at once, so it
        lands before whatever was queued after that call (a run's end)."""
        if threading.current_thread() is self._thread:
            n = len(metrics) + len(params) + len(tags)
            if n:
                self._retrying(
                    lambda: self.backend.write(metrics, params, tags),
                    f"{n} values",
                    _runs_of(metrics, params, tags),
                )
            return
        self._queue.extend(("m", *m) for m in metrics)
        self._queue.extend(("p", *p) for p in params)
        self._queue.extend(("t", *t) for t in tags)
        self._wake.set()
        if len(self._queue) >= _LINGER_ITEMS:
            self._urgent.set()

    def bind(self, run_id: str) -> None:
        """Calls queued from this thread belong to `run_id` until `unbind` (a tracked block)."""
        stack = getattr(self._bound, "runs", None)
        if stack is None:
            stack = self._bound.runs = []
        stack.append(run_id)

    def unbind(self, run_id: str) -> None:
        stack = getattr(self._bound, "runs", [])
        if run_id in stack:
            stack.remove(run_id)

    def call(
        self,
        fn: Callable[[], object],
        what: str,
        run_id: str | None = None,
        *,
        result: bool = True,
    ) -> None:
        """Run `fn` on the writer thread, in order with the values queued around it. It belongs
        to `run_id` (default: the run bound to this thread): that run's end waits for it, and the
        run shows `nb_mlops.pending` meanwhile.

        `result` says whether it saves part of the run's results (the model, training metrics:
        a run missing one is never FINISHED) or only provenance (notebook and environment
        capture, dataset inputs, a traceback: a run missing one keeps its status, tagged
        `nb_mlops.incomplete`)."""
        if run_id is None:
            stack = getattr(self._bound, "runs", None)
            run_id = stack[-1] if stack else None
        if run_id is not None:
            with self._errors_lock:
                self._calls.setdefault(run_id, []).append((what, result))
        self._put(("call", fn, what, run_id))

    def end(self, run_id: str, status: str, end_ms: int) -> None:
        """Queue a run's end after everything queued before it (see `finish_run` for the
        synchronous end of a tracked block)."""
        self._put(("end", run_id, status, end_ms))

    def _put(self, op: tuple[Any, ...]) -> None:
        self._queue.append(op)
        if op[0] not in ("p", "t"):  # work to start now, or someone waiting
            self._urgent.set()
        self._wake.set()

    def pending(self) -> int:
        return len(self._queue) + (1 if self._busy else 0)

    def pending_work(self, run_id: str) -> list[str]:
        """What queued or running calls of `run_id` save (e.g. ["model"]), oldest first."""
        with self._errors_lock:
            return [_short(what) for what, _ in self._calls.get(run_id, ())]

    def _pending_results(self, run_id: str) -> list[str]:
        with self._errors_lock:
            return [_short(what) for what, result in self._calls.get(run_id, ()) if result]

    def finish_run(self, run_id: str, status: str, end_ms: int) -> bool:
        """End a run now: its values still queued and its status, in one committed transaction.

        When calls queued for the run are still to run, the values are committed with tags
        saying what is pending and how the run ended, and the thread settles the run after those
        calls. Pending results (the model, training metrics) keep the status RUNNING until then;
        pending provenance (capture, dataset inputs) does not hold the status back.

        Returns:
            True when the run is completely stored, False when calls are still pending.

        Raises:
            StoreError: the values or the end could not be saved (the run is then not FINISHED),
                or an earlier background write failed and nobody was told yet.
        """
        with self._write_lock:
            mine = self._take(run_id)
            metrics = [op[1:] for op in mine if op[0] == "m"]
            params = [op[1:] for op in mine if op[0] == "p"]
            tags = [op[1:] for op in mine if op[0] == "t"]
            n = len(mine)
            with self._errors_lock:
                lost = self._lost.pop(run_id, None)
            if lost is not None and status == "FINISHED":
                status = "FAILED"  # some of its values were never saved
                tags.append((run_id, "nb_mlops.error", f"not saved: {lost}"[:500]))
            waiting = self.pending_work(run_id)
            results = self._pending_results(run_id)
            if waiting:
                tags += [
                    (run_id, PENDING_TAG, ", ".join(waiting)),
                    (run_id, END_STATUS_TAG, f"{status}@{end_ms}@{'|'.join(results)}"),
                ]
            failure = self._attempt(
                lambda: self.backend.finish(
                    run_id, (metrics, params, tags), None if results else status, end_ms
                )
            )
        if failure is None and waiting:
            # after its pending calls: the status when results were pending, else only the tags
            self._put(("end", run_id, status if results else None, end_ms))
        earlier = self._take_errors()
        if failure is not None:
            # the thread marks it FAILED once it can (a lock gone, space freed): it must not read
            # RUNNING for as long as this process lives, nor ever FINISHED
            self._put(("end", run_id, "FAILED", end_ms, f"{n} value(s) were not saved: {failure}"))
            raise StoreError(
                f"run {run_id} was not saved: {n} value(s) and its end ({status}) failed: "
                f"{failure}" + (f" (earlier: {earlier[0]})" if earlier else "")
            )
        if earlier:
            more = f" (and {len(earlier) - 1} more)" if len(earlier) > 1 else ""
            raise StoreError(f"{earlier[0]}{more}")
        return not waiting

    def _take(self, run_id: str) -> list[tuple[Any, ...]]:
        """Remove and return the values of `run_id` still queued (under `_write_lock`)."""
        queue = self._queue
        mine: list[tuple[Any, ...]] = []
        kept: list[tuple[Any, ...]] = []
        for _ in range(len(queue)):  # producers may append meanwhile: only these are looked at
            op = queue.popleft()
            (mine if op[0] in ("m", "p", "t") and op[1] == run_id else kept).append(op)
        queue.extendleft(reversed(kept))
        return mine

    def flush(self, timeout: float | None = None, report: bool = True) -> int:
        """Block until everything queued so far is persisted; raise what failed meanwhile
        (with `report=False`, leave failures for a later flush: a read that only waits).

        Returns:
            0, or with a `timeout` that passed first, how many items are still queued.

        Raises:
            StoreError: the writer could not persist something (the message says what).
        """
        left = 0
        idle = not self._queue and not self._busy  # nothing queued, nothing in hand: no handoff
        if not idle and threading.current_thread() is not self._thread:
            barrier = _Barrier()
            self._put(("barrier", barrier))
            if not barrier.done.wait(timeout):
                left = max(1, len(self._queue))
        errors = self._take_errors() if report else []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise StoreError(f"{errors[0]}{more}")
        return left

    def _take_errors(self) -> list[str]:
        with self._errors_lock:
            errors, self._errors = self._errors, []
        return errors

    # --- consumer side (the writer thread) ----------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            while self._queue:
                self._busy = True
                try:
                    head = self._queue[0][0]
                except IndexError:  # a run's end took the last values meanwhile
                    break
                if head in ("m", "p", "t"):
                    self._linger()  # a short block's end may take them: one commit, no race
                    if not self._queue:
                        break
                self._drain()
            self._busy = False

    def _linger(self) -> None:
        """Sleep up to `_LINGER_SECONDS` unless a batch's worth or other work is queued (the
        producers set `_urgent` then): one wake-up, no polling against the cell for the GIL."""
        if len(self._queue) < _LINGER_ITEMS:
            self._urgent.wait(_LINGER_SECONDS)
        self._urgent.clear()

    def _drain(self) -> None:
        metrics: list[Metric] = []
        params: list[Pair] = []
        tags: list[Pair] = []
        queue = self._queue
        control = None
        with self._write_lock:
            while queue and len(metrics) + len(params) + len(tags) < _BATCH:
                op = queue[0]
                kind = op[0]
                if kind == "m":
                    metrics.append(op[1:])
                elif kind == "p":
                    params.append(op[1:])
                elif kind == "t":
                    tags.append(op[1:])
                else:
                    if not (metrics or params or tags):
                        control = queue.popleft()
                    break  # write what came before this op first
                queue.popleft()
            if metrics or params or tags:
                n = len(metrics) + len(params) + len(tags)
                runs = _runs_of(metrics, params, tags)
                self._retrying(
                    lambda: self.backend.write(metrics, params, tags),
                    f"{n} values for run(s) {', '.join(runs)}",
                    runs,
                )
        if control is not None:
            self._control(control)

    def _control(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "barrier":
            op[1].done.set()
        elif kind == "end":
            self._deferred_end(*op[1:])
        elif kind == "call":
            _, fn, what, run_id = op
            failure = self._attempt(fn)
            with self._errors_lock:
                calls = self._calls.get(run_id, []) if run_id is not None else []
                entry = next((c for c in calls if c[0] == what), None)
                if entry is not None:
                    calls.remove(entry)
                if run_id is not None and not calls:
                    self._calls.pop(run_id, None)
                if failure is not None:
                    text = f"could not save {what}: {failure}"
                    self._errors.append(text)
                    if run_id is not None:
                        result = entry[1] if entry is not None else True
                        self._call_failures.setdefault(run_id, []).append((text, result))

    def _deferred_end(
        self, run_id: str, status: str | None, end_ms: int, error: str | None = None
    ) -> None:
        """The end of a run whose owner ended it while its calls were pending (they have run
        now), or whose own end could not be saved (`error`)."""
        with self._errors_lock:
            failures = self._call_failures.pop(run_id, [])
        if error is not None:
            failures.insert(0, (error, True))
        tags: list[Pair] = []
        lost = [text for text, result in failures if result]
        if lost and status is not None:
            status = "FAILED" if status == "FINISHED" else status
            tags.append((run_id, "nb_mlops.error", lost[0][:500]))
        elif failures:
            tags.append((run_id, INCOMPLETE_TAG, "; ".join(t for t, _ in failures)[:500]))
        self._retrying(
            lambda: self.backend.finish(
                run_id, ([], [], tags), status, end_ms, (PENDING_TAG, END_STATUS_TAG)
            ),
            f"end of run {run_id}",
        )

    def _attempt(self, fn: Callable[[], object], retry: bool = True) -> str | None:
        """Run `fn`, retrying while the database is locked (up to `retry_seconds`); return what
        failed, as text, or None."""
        deadline = time.monotonic() + (self.retry_seconds if retry else 0)
        delay = 0.05
        while True:
            try:
                fn()
                return None
            except Exception as exc:  # noqa: BLE001 - returned to the caller, never swallowed
                if _is_busy(exc) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                return f"{type(exc).__name__}: {exc}"

    def _retrying(self, fn: Callable[[], object], what: str, runs: Iterable[str] = ()) -> None:
        failure = self._attempt(fn)
        if failure is not None:
            with self._errors_lock:
                for run_id in runs:  # their end must not read FINISHED
                    self._lost.setdefault(run_id, f"{what}: {failure}")
                self._errors.append(f"could not save {what}: {failure}")


def _runs_of(metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> list[str]:
    return sorted({m[0] for m in metrics} | {p[0] for p in params} | {t[0] for t in tags})


def _short(what: str) -> str:
    """`model of 3f2a…` → `model`: the pending tag names the work, the run is the tag's own."""
    return what.split(" of ", 1)[0]


def raise_unavailable(uri: str, reason: object) -> StoreError:
    from nb_mlops.core.errors import StoreUnavailable

    return StoreUnavailable(
        f"tracking server {uri} is unreachable ({reason}); start it, or remove `tracking_uri` "
        "from [tool.nb_mlops] and unset NB_MLOPS_TRACKING_URI / MLFLOW_TRACKING_URI to use the "
        "embedded store"
    )
