"""The write-ahead outbox of a tracking server: what a tracked cell logged, kept on local disk
until the server acknowledged it.

On a server a cell must not wait for HTTP round trips, yet what it logged must survive the process.
So a run's values and its end are appended to a journal in `.nb_mlops/outbox/` (one whole, fsynced
JSON line per entry: `nb_mlops.core.files.append_fd`) and a sender thread sends them in order.
The sender records its progress in a second journal (`<name>.done`): the server id of each local
run key, and how many requests of each entry were acknowledged. A journal is removed once all of
its entries are acknowledged.

A run is known locally by a key (a fresh uuid) until the server created it: the key is the run's
tag `nb_mlops.outbox_id`, so a replay that does not know the run id yet finds the run instead of
creating a second one. A replay resends at most the one request whose acknowledgement was not
recorded; MLflow's SQL store ignores a metric point it already holds (same key, value, timestamp and
step), so no point is duplicated.

Each process holds an exclusive `flock` on its own journal; a journal whose lock can be taken
belongs to a process that died, and the next process that opens the store's outbox (the first
tracked cell, a read of runs, or `nb_mlops.flush()`) replays it.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb_mlops.core.errors import StoreError
from nb_mlops.core.files import append_fd, append_line, fsync_dir
from nb_mlops.core.owners import KILLED_REASON_TAG
from nb_mlops.core.writer import MAX_PARAM_VALUE, MAX_TAG_VALUE, Metric, Pair

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["OUTBOX_TAG", "Outbox", "OutboxBackend"]

OUTBOX_TAG = "nb_mlops.outbox_id"
_MAX_BACKOFF = 30.0


class _Journal:
    """One journal file and its progress file, locked by the process that sends it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.done_path = path.with_suffix(".done")
        self.fd = fd  # holds the flock
        self.appended = 0
        self.sent = 0
        self.progress: dict[str, int] = {}  # entry id → requests acknowledged
        self.ids: dict[str, str] = {}  # run key → run id, as recorded

    def load(self) -> list[dict[str, Any]]:
        """Entries of a journal left by a dead process, and its recorded progress."""
        for line in _lines(self.done_path):
            if "k" in line:
                self.ids[line["k"]] = line["r"]
            elif "e" in line:
                self.progress[line["e"]] = max(self.progress.get(line["e"], 0), line["n"])
        entries = [e for e in _lines(self.path) if "id" in e]
        self.appended = len(entries)
        return entries

    def note(self, record: dict[str, Any]) -> None:
        append_line(self.done_path, json.dumps(record).encode() + b"\n")

    def remove(self) -> None:
        """Drop a dead process's journal (the entries first: progress without them is moot)."""
        self.path.unlink(missing_ok=True)
        self.done_path.unlink(missing_ok=True)

    def empty(self) -> None:
        """Empty this process's own journal in place: the file keeps its lock."""
        os.truncate(self.path, 0)
        if self.done_path.exists():
            os.truncate(self.done_path, 0)
        self.sent = self.appended = 0
        self.ids.clear()


def _lines(path: Path) -> list[dict[str, Any]]:
    """The whole JSON lines of a journal (a torn last line is skipped)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _lock(path: Path) -> int | None:
    """An fd (appending) holding an exclusive lock on `path`, or None when another process
    holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Outbox:
    """This process's outbox for one tracking server, and the thread that sends it.

    Args:
        folder: the project's `.nb_mlops/outbox`.
        uri: the server (for messages).
        client: returns the MlflowClient to send with (called on the sender thread).
        settle: called on the sender thread once the journals dead processes left are replayed,
            with the pids whose journals are still in the folder (live processes', or being
            replayed by another): it settles the runs of processes that died inside a run.
    """

    def __init__(
        self,
        folder: Path,
        uri: str,
        client: Callable[[], MlflowClient],
        settle: Callable[[set[int]], object] | None = None,
    ) -> None:
        self.folder = folder
        self.uri = uri
        self._client = client
        self._settle = settle
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        fd = _lock(path)
        assert fd is not None  # a fresh name
        fsync_dir(folder)
        self.own = _Journal(path, fd)
        self._cond = threading.Condition()
        self._append_lock = threading.Lock()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._busy = False
        self._creates: dict[str, dict[str, Any]] = {}  # run key → how to create it
        self._ids: dict[str, tuple[str, str]] = {}  # run key → (run id, artifact uri)
        self._serial = itertools.count()  # entry ids: the run key and this number
        self._tried: set[str] = set()  # keys a create was sent for (it may have reached it)
        self.failure: str | None = None
        self._failures = 0  # attempts that failed, ever
        self._thread = threading.Thread(target=self._loop, name="nb_mlops-outbox", daemon=True)
        self._thread.start()
        self.adopted = self.adopt()  # entries dead processes left: replayed first
        atexit.register(self._tidy)

    def _tidy(self) -> None:
        """At exit (after the exit's flush): drop this process's journal when it holds nothing
        unacknowledged, so finished sessions leave no files behind."""
        with self._append_lock:
            if self.own.sent == self.own.appended:
                self.own.remove()

    # --- the cell's side --------------------------------------------------------------------
    def prepare(self, key: str, create: dict[str, Any]) -> None:
        """A new run: have the sender create it now (its id is not waited for)."""
        with self._cond:
            self._creates[key] = create
            self._queue.append(("create", key))
            self._cond.notify_all()

    def append(self, key: str, values: dict[str, Any]) -> None:
        """Append one entry for run `key` (fsynced), then queue it for sending."""
        entry = {
            "id": f"{key}.{next(self._serial)}",
            "key": key,
            "create": self._creates.get(key),
            **values,
        }
        with self._append_lock:
            append_fd(self.own.fd, json.dumps(entry).encode() + b"\n")
            self.own.appended += 1
        with self._cond:
            self._queue.append(("entry", self.own, entry))
            self._cond.notify_all()

    def known(self, key: str) -> tuple[str, str] | None:
        """(run id, artifact uri) of run `key` when the server created it already."""
        return self._ids.get(key)

    def resolve(self, key: str, timeout: float | None = None) -> tuple[str, str]:
        """(run id, artifact uri) of run `key`, waiting for the server to create it.

        Raises:
            StoreError: the server refused or did not answer meanwhile.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            failures = self._failures
            while key not in self._ids:
                if key not in self._creates:
                    return key, ""  # not a run of this outbox: its key is its id
                if self._failures != failures:
                    raise StoreError(f"run {key} is not created on {self.uri}: {self.failure}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise StoreError(f"run {key} is not created on {self.uri} yet")
                self._cond.wait(left)
            return self._ids[key]

    def wait(self, timeout: float | None = None, report: bool = True) -> int:
        """Block until everything queued is acknowledged; return how many entries are left when
        `timeout` passed or the server failed meanwhile (with `report`, raise the failure)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            failures = self._failures
            self._cond.notify_all()  # a sender backing off from a failure retries now
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if self._failures != failures or (left is not None and left <= 0):
                    break
                self._cond.wait(left)
            pending = sum(1 for item in self._queue if item[0] == "entry")
            failed = self._failures != failures
        if pending and failed and report:
            raise StoreError(
                f"tracking server {self.uri} did not take {pending} outbox entr"
                f"{'y' if pending == 1 else 'ies'} ({self.failure}); they are kept in "
                f"{self.folder} and sent when it answers (a later flush, or the next session)"
            )
        return pending

    # --- replay ------------------------------------------------------------------------------
    def adopt(self) -> int:
        """Queue the journals of dead processes (their lock is free); return how many entries."""
        count = 0
        for path in sorted(self.folder.glob("*.jsonl")):
            if path == self.own.path:
                continue
            fd = _lock(path)
            if fd is None:
                continue  # a live process sends it
            journal = _Journal(path, fd)
            entries = journal.load()
            with self._cond:
                for entry in entries:
                    self._queue.append(("entry", journal, entry, True))
                self._queue.append(("close", journal))
                self._cond.notify_all()
            count += len(entries)
        if self._settle is not None:
            with self._cond:
                self._queue.append(("settle",))  # after the replays: a replayed end wins
                self._cond.notify_all()
        return count

    def journal_pids(self) -> set[int]:
        """Pids of the journals in the folder other than this process's own."""
        names = (p.name for p in self.folder.glob("*.jsonl") if p != self.own.path)
        return {int(pid) for pid, _, _ in (n.partition("-") for n in names) if pid.isdigit()}

    # --- the sender thread -------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                while not self._queue:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                item = self._queue[0]
                self._busy = True
            failure = self._attempt(item)
            with self._cond:
                if failure is None:
                    self._queue.popleft()
                    backoff = 0.5
                elif item[0] in ("create", "settle"):
                    self._queue.popleft()  # the run's first entry creates it; a later session
                    # settles what this one could not
                if failure is not None:
                    self.failure = failure
                    self._failures += 1
                self._cond.notify_all()
                if failure is not None:
                    self._cond.wait(backoff)  # a flush or a new entry retries at once
                    backoff = min(backoff * 2, _MAX_BACKOFF)

    def _attempt(self, item: tuple[Any, ...]) -> str | None:
        try:
            if item[0] == "create":
                self._ensure(self.own, item[1], self._creates[item[1]], replay=False)
            elif item[0] == "entry":
                self._send(item[1], item[2], replay=len(item) > 3)
            elif item[0] == "settle":
                assert self._settle is not None
                self._settle(self.journal_pids())
            else:
                self._close(item[1])
        except Exception as exc:  # noqa: BLE001 - kept, reported by wait(), retried
            return f"{type(exc).__name__}: {exc}"[:500]
        return None

    def _close(self, journal: _Journal) -> None:
        journal.remove()
        os.close(journal.fd)

    def _ensure(
        self, journal: _Journal, key: str, create: dict[str, Any] | None, replay: bool
    ) -> str:
        """The server id of run `key`: known, recorded, found by its tag, or created now."""
        known = self._ids.get(key) or ((journal.ids[key], "") if key in journal.ids else None)
        if known is not None:
            return known[0]
        if create is None:
            return key  # a run id already (a run this process did not create)
        client = self._client()
        searched = replay or key in self._tried
        found = _find(client, key, create["experiment_id"]) if searched else None
        self._tried.add(key)
        if found is None:
            tags = dict(create["tags"])
            parent = tags.get("mlflow.parentRunId")
            if parent in self._ids or parent in journal.ids:
                tags["mlflow.parentRunId"] = self._ensure(journal, parent, None, replay)
            found = client.create_run(
                create["experiment_id"],
                start_time=create["start_ms"],
                tags={**tags, OUTBOX_TAG: key},
                run_name=create["name"],
            )
        run_id = str(found.info.run_id)
        journal.note({"k": key, "r": run_id})
        journal.ids[key] = run_id
        with self._cond:
            self._ids[key] = (run_id, str(found.info.artifact_uri))
            self._cond.notify_all()
        return run_id

    def _send(self, journal: _Journal, entry: dict[str, Any], replay: bool) -> None:
        """Send one entry's requests, recording each acknowledged one."""
        run_id = self._ensure(journal, entry["key"], entry.get("create"), replay)
        done = journal.progress.get(entry["id"], 0)
        requests = _requests(entry, replay)
        client = self._client()
        for n, request in enumerate(requests[done:], start=done + 1):
            request(client, run_id)
            journal.note({"e": entry["id"], "n": n})
            journal.progress[entry["id"]] = n
        journal.progress.pop(entry["id"], None)
        if journal is self.own:
            with self._append_lock:
                journal.sent += 1
                if journal.sent == journal.appended and len(self._queue) <= 1:
                    journal.empty()  # all acknowledged


def _find(client: MlflowClient, key: str, experiment_id: str) -> Any:
    """The run a previous attempt created for `key`, or None."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{OUTBOX_TAG}` = '{key}'", max_results=1
    )
    return found[0] if found else None


Request = Callable[["MlflowClient", str], None]


def _requests(entry: dict[str, Any], replay: bool = False) -> list[Request]:
    """The server calls of one entry, in order, each within MLflow's batch limits. A replayed
    end also drops the reason a later session gave when it marked the run KILLED: the end its
    owner recorded is the truth."""
    from nb_mlops.core.store import import_mlflow

    import_mlflow()  # the sender's thread: the package first (see import_mlflow)
    from mlflow.entities import Metric as MetricEntity
    from mlflow.entities import Param, RunTag

    params = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in entry.get("params", [])]
    tags = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in entry.get("tags", [])]
    metrics = [MetricEntity(k, float(v), ts, s) for k, v, ts, s in entry.get("metrics", [])]
    out: list[Request] = []
    for i in range(0, max(len(params), len(tags)), 100):
        out.append(partial(_batch, params=params[i : i + 100], tags=tags[i : i + 100]))
    for i in range(0, len(metrics), 1000):
        out.append(partial(_batch, metrics=metrics[i : i + 1000]))
    out.extend(partial(_drop_tag, key=key) for key in entry.get("drop", []))
    end = entry.get("end")
    if end:
        out.append(partial(_end, status=end[0], end_ms=end[1]))
        if replay:
            out.append(partial(_drop_tag, key=KILLED_REASON_TAG))
    return out


def _batch(client: MlflowClient, run_id: str, **values: Any) -> None:
    client.log_batch(run_id, **values)


def _end(client: MlflowClient, run_id: str, status: str, end_ms: int) -> None:
    client.set_terminated(run_id, status=status, end_time=end_ms)


def _drop_tag(client: MlflowClient, run_id: str, key: str) -> None:
    try:
        client.delete_tag(run_id, key)
    except Exception:  # noqa: BLE001 - absent already: nothing to drop
        return


class OutboxBackend:
    """The writer's backend on a server: every write becomes an outbox entry (no network)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def write(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None:
        by_run: dict[str, dict[str, list[Any]]] = {}
        for run_id, key, value, ts, step in metrics:
            by_run.setdefault(run_id, {}).setdefault("metrics", []).append([key, value, ts, step])
        for name, pairs in (("params", params), ("tags", tags)):
            for run_id, key, text in pairs:
                by_run.setdefault(run_id, {}).setdefault(name, []).append([key, text])
        for run_id, values in by_run.items():
            self.outbox.append(run_id, values)

    def end(self, run_id: str, status: str, end_ms: int) -> None:
        self.outbox.append(run_id, {"end": [status, end_ms]})

    def finish(
        self,
        run_id: str,
        values: tuple[list[Metric], list[Pair], list[Pair]],
        status: str | None,
        end_ms: int,
        drop_tags: tuple[str, ...] = (),
    ) -> None:
        """One entry: the run's last values, the tags to drop, its end (one fsynced append)."""
        metrics, params, tags = values
        entry: dict[str, Any] = {
            "metrics": [[k, v, ts, s] for _, k, v, ts, s in metrics],
            "params": [[k, t] for _, k, t in params],
            "tags": [[k, t] for _, k, t in tags],
        }
        if drop_tags:
            entry["drop"] = list(drop_tags)
        if status is not None:
            entry["end"] = [status, end_ms]
        self.outbox.append(run_id, entry)
