"""Background completion of snapshots: the fingerprint blocks the caller, the durable write follows.

A snapshot fixes its digest and version number (a `.pending` reservation, see refs) while the caller
waits, with every byte it still has to store already captured (file bytes copied to a temp file,
DataFrame values copied out of the frame), so later edits of the source never reach the store. One
writer thread per process then encodes, fsyncs and renames the new objects and only then writes the
manifest, in submission order. Until that, the version is invisible to other processes; `restore`,
`snapshots`, `verify` and `gc` in this process wait for pending writes, and so do `nb_mlops.flush()`
and interpreter exit (see `nb_mlops.core.durable`: before thread pools shut down, status 1 on a
failure). A forked child starts with no pending write of its parent's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from nb_mlops.core import durable
from nb_mlops.core.errors import DataError

__all__ = [
    "PendingWrite",
    "latest_pending",
    "raise_failures",
    "submit",
    "wait_all",
    "will_exist",
]

log = logging.getLogger("nb_mlops.data")

_lock = threading.Lock()
_jobs: list[PendingWrite] = []
_executor: ThreadPoolExecutor | None = None


class PendingWrite:
    """The durable write of one snapshot version, running in the writer thread.

    Attributes:
        name, version, digest: the version being written.
        objects: object ids this write will create (for "will it exist" checks of later snapshots).
        chunks: logical chunk digests this write will index.
        meta: the manifest fields known before the write (kind, rows, schema, profile, chunking...).
        store: the data store's root: one process may write to several projects' stores, and a
            write to one says nothing about a snapshot of the same name or object in another.
    """

    def __init__(
        self,
        name: str,
        version: int,
        digest: str,
        objects: Iterable[str] = (),
        chunks: Iterable[str] = (),
        meta: dict[str, Any] | None = None,
        store: str = "",
    ) -> None:
        self.name, self.version, self.digest, self.store = name, version, digest, store
        self.objects, self.chunks = set(objects), set(chunks)
        self.meta = meta or {}
        self.future: Future[dict[str, Any]] = Future()
        self.reported = False

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def done(self) -> bool:
        return self.future.done()

    def failed(self) -> bool:
        return self.future.done() and self.future.exception() is not None

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the version is durable; return its manifest (DataError if the write failed:
        then nothing of this version was recorded). `concurrent.futures.TimeoutError` when
        `timeout` passes first."""
        self.future.exception(timeout)  # waits; raises FutureTimeout only while not done
        try:
            return self.future.result()
        except DataError as exc:
            self.reported = True
            raise DataError(f"{self.ref} was not stored: {exc}") from exc
        except Exception as exc:
            self.reported = True
            raise DataError(f"{self.ref} was not stored: {type(exc).__name__}: {exc}") from exc


def _run(job: PendingWrite, work: Callable[[], dict[str, Any]]) -> None:
    try:
        job.future.set_result(work())
    except BaseException as exc:  # handed to whoever waits; logged for whoever does not
        log.error("nb_mlops: background write of %s failed: %s", job.ref, exc)
        job.future.set_exception(exc)


def submit(job: PendingWrite, work: Callable[[], dict[str, Any]]) -> PendingWrite:
    """Queue `work` (which makes `job`'s version durable and returns its manifest)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="nb_mlops-data-writer")
            durable.register("data", wait_all)
        _jobs.append(job)
        _executor.submit(_run, job, work)
    return job


def latest_pending(name: str, store: str) -> PendingWrite | None:
    """The newest not-failed write of `name` to `store` still tracked in this process."""
    with _lock:
        for job in reversed(_jobs):
            if job.name == name and job.store == store and not job.failed():
                return job
    return None


def will_exist(store: str, oid: str | None = None, chunk: str | None = None) -> bool:
    """True when an unfinished or finished write of this process creates the object / chunk in
    `store`."""
    with _lock:
        return any(
            (oid is not None and oid in job.objects) or (chunk is not None and chunk in job.chunks)
            for job in _jobs
            if job.store == store and not job.failed()
        )


def raise_failures() -> None:
    """Raise the first failed write nobody has been told about yet (without waiting)."""
    with _lock:
        failed = [job for job in _jobs if job.failed() and not job.reported]
    if failed:
        with _lock:
            for job in failed:
                if job in _jobs:
                    _jobs.remove(job)
        failed[0].wait()


def wait_all(timeout: float | None = None, report: bool = True) -> int:
    """Wait for every pending write (at most `timeout` seconds); raise the first failure nobody
    has been told about yet (unless `report` is False: failures stay for a later call). Returns
    how many writes are still pending (0 without a timeout)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:
        jobs = list(_jobs)
    error: DataError | None = None
    left = 0
    for job in jobs:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            if not report:
                job.future.exception(remaining)
            elif not job.reported:
                job.wait(remaining)
        except FutureTimeout:
            left += 1
        except DataError as exc:
            error = error or exc
    with _lock:
        for job in jobs:
            if job.done() and job in _jobs and (report or not job.failed()):
                _jobs.remove(job)
    if error is not None:
        raise error
    return left


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: its pending writes are the parent's."""
    global _executor, _lock
    _lock = threading.Lock()
    _jobs.clear()
    _executor = None


os.register_at_fork(after_in_child=_forget_after_fork)
