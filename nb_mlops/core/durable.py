"""What this process still has to make durable: `flush()` waits for all of it, and so does exit.

Each background writer (tracking's writer threads, data snapshots' pending writes) registers a waiter
on first use. `flush()` (public as `nb_mlops.flush`) runs every waiter and raises what failed. At
interpreter exit the same wait runs from `threading`'s exit hooks, which run before
`concurrent.futures` shuts its thread pools down (plain `atexit` handlers run after, when a write
still needing a pool would fail); a failed write is printed and the process exits with status 1.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable

from nb_mlops.core.errors import NbMlopsError, StillPending

__all__ = ["EXIT_STATUS", "flush", "register", "settle"]

EXIT_STATUS = 1
"""The exit status of a process whose pending writes failed at exit."""

Waiter = Callable[[float | None, bool], int]
"""`wait(timeout, report)`: block until done or `timeout`; return how many writes are still
pending; with `report`, raise (an NbMlopsError) what failed."""

_lock = threading.Lock()
_waiters: dict[str, Waiter] = {}
_failed_at_exit: list[str] = []
# a message once exit has waited this long, so a slow exit is never a silent hang
_EXIT_NOTICE_SECONDS = 1.0


def register(name: str, wait: Waiter) -> None:
    """Have `flush()` and interpreter exit run `wait` (one waiter per name)."""
    with _lock:
        _waiters[name] = wait


def flush(timeout: float | None = None) -> None:
    """Wait until everything this process logged, snapshotted or queued is stored.

    That is: tracked params, metrics and tags, runs' ends, models and artifacts still being saved,
    and data snapshots still being written. Every failure since the last flush is raised (the
    first; the others as notes).

    Args:
        timeout: seconds to wait in all (None: as long as it takes).

    Raises:
        NbMlopsError: a write failed (a `StoreError` or `DataError` naming what was not saved).
        StillPending: `timeout` passed first; what is pending keeps being written.

    Example:
        >>> nb_mlops.flush()          # doctest: +SKIP
    """
    left = _wait_all(timeout)
    if left:
        raise StillPending(
            f"{left} write(s) still pending after {timeout:g} s; they keep being written: "
            "call nb_mlops.flush() again to wait for them"
        )


def settle(timeout: float = 30.0) -> None:
    """Wait (at most `timeout` seconds) for this process's own pending writes, so that a read
    which follows sees them; failures are left for `flush()` and exit to raise. Costs nothing
    when nothing is pending.

    Read paths call it (`runs`, `lineage`, promotion): one kernel reads its own writes.
    """
    with contextlib.suppress(NbMlopsError):
        _wait_all(timeout, report=False)


def _wait_all(timeout: float | None, report: bool = True) -> int:
    """Run every waiter within `timeout` in all; return how many writes are still pending."""
    deadline = None if timeout is None else time.monotonic() + timeout
    errors: list[NbMlopsError] = []
    left = 0
    with _lock:
        waiters = list(_waiters.values())
    for wait in waiters:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            left += wait(remaining, report)
        except NbMlopsError as exc:
            errors.append(exc)
    if errors:
        first = errors[0]
        for other in errors[1:]:
            first.add_note(f"also: {other}")
        raise first
    return left


def _at_exit() -> None:
    """Interpreter exit: wait for pending writes; a failure is printed and makes the status 1."""
    try:
        if _wait_all(_EXIT_NOTICE_SECONDS):
            print(
                "nb_mlops: waiting for pending writes before exiting (Ctrl-C abandons them)",
                file=sys.stderr,
                flush=True,
            )
            _wait_all(None)
    except NbMlopsError as exc:
        lines = [str(exc), *getattr(exc, "__notes__", [])]
        _failed_at_exit.extend(lines)
        for line in lines:
            print(f"error: nb_mlops: {line}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        _failed_at_exit.append("interrupted")
        print("error: nb_mlops: interrupted; pending writes were abandoned", file=sys.stderr)


def _exit_status() -> None:
    """Registered with `atexit` on import, so it runs late: a failed exit's status is non-zero."""
    if _failed_at_exit:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(EXIT_STATUS)


with contextlib.suppress(RuntimeError):  # imported while the interpreter is already exiting
    threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
    atexit.register(_exit_status)
