"""The background writer: one thread per store persists what tracked code logs, in batches.

`log()` only appends a tuple to a queue (microseconds); the thread turns runs of queued values into
one transaction each. On the embedded store it writes MLflow's tables directly with `sqlite3` (MLflow's
own `log_batch` persists ≈ 4-8k points/s and `create_run` costs ≈ 8 ms); on a server it calls
`MlflowClient.log_batch`. Order is kept: a run's end (its status) is written only after everything
queued before it. Nothing is dropped silently: a write that keeps failing is reported by `flush()`.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import math
import os
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nb_mlops.core.errors import StoreError, TrackingError
from nb_mlops.core.procs import pid_alive

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["ClientBackend", "SqliteBackend", "Writer", "owner_token", "SCHEMA_REVISION"]

# The MLflow schema revision these SQL statements were written against (MLflow 3.17). Any other
# revision makes the embedded store fall back to MlflowClient (slower, always correct).
SCHEMA_REVISION = "dc11669786a5"
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
_MAX_FLOAT = 1.7976931348623157e308
_BATCH = 20_000

Metric = tuple[str, str, float, int, int]  # run_id, key, value, timestamp_ms, step
Pair = tuple[str, str, str]  # run_id, key, value


@functools.cache
def owner_token(pid: int | None = None) -> str:
    """`host:pid:start` naming this process, so a later session can tell a dead owner's runs."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def _process_start(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return "?"


def _owner_alive(token: str) -> bool:
    host, _, rest = token.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine: we cannot tell, leave it alone
    pid = int(pid_text)
    if not pid_alive(pid):
        return False
    return start == "?" or _process_start(pid) == start


class Backend(Protocol):
    def write(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None: ...

    def end(self, run_id: str, status: str, end_ms: int) -> None: ...


class SqliteBackend:
    """Direct writes into the embedded store's MLflow tables (one connection per thread)."""

    def __init__(self, db_path: Path, busy_timeout: float = 5.0) -> None:
        self.db_path = db_path
        self.busy_timeout = busy_timeout
        self._local = threading.local()

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
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
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
        rows = [_metric_row(m) for m in metrics]
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        for row in rows:
            key = (row[0], row[3])
            best = latest.get(key)
            # MLflow's rule: the latest value is the one with the greatest (step, timestamp, value)
            if best is None or (row[4], row[2], row[1]) >= (best[4], best[2], best[1]):
                latest[key] = row
        with self._tx() as con:
            self._check_active(
                con, {m[0] for m in metrics} | {p[0] for p in params} | {t[0] for t in tags}
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
        """Mark KILLED the RUNNING runs whose owning process (tag `nb_mlops.owner`) is dead."""
        rows = (
            self._con()
            .execute(
                "SELECT r.run_uuid, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE r.status = 'RUNNING' AND t.key = 'nb_mlops.owner'"
            )
            .fetchall()
        )
        dead = [run_id for run_id, token in rows if not _owner_alive(token)]
        now = int(time.time() * 1000)
        for run_id in dead:
            with self._tx() as con:
                con.execute(
                    "UPDATE runs SET status = 'KILLED', end_time = ? "
                    "WHERE run_uuid = ? AND status = 'RUNNING'",
                    (now, run_id),
                )
                con.execute(
                    "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                    (
                        "nb_mlops.killed_reason",
                        "owning kernel died; marked by a later session",
                        run_id,
                    ),
                )
        return dead


def _metric_row(m: Metric) -> tuple[str, float, int, str, int, int]:
    run_id, key, value, ts, step = m
    value = float(value)
    if math.isnan(value):
        return (key, 0.0, ts, run_id, step, 1)
    if math.isinf(value):
        value = math.copysign(_MAX_FLOAT, value)
    return (key, value, ts, run_id, step, 0)


class ClientBackend:
    """Writes through MlflowClient (a tracking server, or a schema this module does not know)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def write(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None:
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
            # MLflow's per-request limits: 1000 metrics, 100 params, 100 tags
            for i in range(0, max(len(ps), len(ts_)), 100):
                self.client.log_batch(run_id, params=ps[i : i + 100], tags=ts_[i : i + 100])
            for i in range(0, len(ms), 1000):
                self.client.log_batch(run_id, metrics=ms[i : i + 1000])

    def end(self, run_id: str, status: str, end_ms: int) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_ms)


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
            it is reported as failed (by the next `flush()`).
    """

    def __init__(self, backend: Backend, retry_seconds: float = 120.0) -> None:
        self.backend = backend
        self.retry_seconds = retry_seconds
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._errors: list[str] = []
        self._errors_lock = threading.Lock()
        self.written = 0
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="nb_mlops-writer", daemon=True)
        self._thread.start()

    # --- producer side (any thread) -----------------------------------------------------------
    def metric(self, run_id: str, key: str, value: float, ts: int, step: int) -> None:
        self._queue.append(("m", run_id, key, value, ts, step))
        if not self._wake.is_set():
            self._wake.set()

    def metrics(self, items: Iterable[tuple[str, str, float, int, int]]) -> None:
        self._queue.extend(("m", *item) for item in items)
        self._wake.set()

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
                self._retrying(lambda: self.backend.write(metrics, params, tags), f"{n} values")
                self.written += n
            return
        self._queue.extend(("m", *m) for m in metrics)
        self._queue.extend(("p", *p) for p in params)
        self._queue.extend(("t", *t) for t in tags)
        self._wake.set()

    def call(self, fn: Callable[[], object], what: str) -> None:
        """Run `fn` on the writer thread, in order with the values queued around it."""
        self._put(("call", fn, what))

    def end(self, run_id: str, status: str, end_ms: int) -> None:
        self._put(("end", run_id, status, end_ms))

    def _put(self, op: tuple[Any, ...]) -> None:
        self._queue.append(op)
        self._wake.set()

    def pending(self) -> int:
        return len(self._queue)

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything queued so far is persisted; raise what failed meanwhile.

        Raises:
            StoreError: the writer could not persist something (the message says what).
            TrackingError: `timeout` passed first.
        """
        idle = not self._queue and not self._busy  # nothing queued, nothing in hand: no handoff
        if not idle and threading.current_thread() is not self._thread:
            barrier = _Barrier()
            self._put(("barrier", barrier))
            if not barrier.done.wait(timeout):
                raise TrackingError(
                    f"flush timed out after {timeout}s with {len(self._queue)} values still "
                    "queued; they are still being written: call flush() again"
                )
        with self._errors_lock:
            errors, self._errors = self._errors, []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise StoreError(f"{errors[0]}{more}")

    # --- consumer side (the writer thread) ----------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            while self._queue:
                self._busy = True
                self._drain()
            self._busy = False

    def _drain(self) -> None:
        metrics: list[Metric] = []
        params: list[Pair] = []
        tags: list[Pair] = []
        queue = self._queue
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
                if metrics or params or tags:
                    break  # write what came before this op first
                queue.popleft()
                self._control(op)
                return
            queue.popleft()
        if metrics or params or tags:
            n = len(metrics) + len(params) + len(tags)
            self._retrying(
                lambda: self.backend.write(metrics, params, tags),
                f"{n} values for run(s) {', '.join(sorted({m[0] for m in metrics} | {p[0] for p in params} | {t[0] for t in tags}))}",
            )
            self.written += n

    def _control(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "barrier":
            op[1].done.set()
        elif kind == "end":
            _, run_id, status, end_ms = op
            self._retrying(lambda: self.backend.end(run_id, status, end_ms), f"end of run {run_id}")
        elif kind == "call":
            self._retrying(op[1], op[2])

    def _retrying(self, fn: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                fn()
                return
            except Exception as exc:  # noqa: BLE001 - reported by flush(), never swallowed
                if _is_busy(exc) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                with self._errors_lock:
                    self._errors.append(f"could not save {what}: {type(exc).__name__}: {exc}")
                return


def default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def raise_unavailable(uri: str, reason: object) -> StoreError:
    from nb_mlops.core.errors import StoreUnavailable

    return StoreUnavailable(
        f"tracking server {uri} is unreachable ({reason}); start it, or unset "
        "NB_MLOPS_TRACKING_URI / MLFLOW_TRACKING_URI to use the embedded store"
    )
