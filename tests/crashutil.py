"""Helpers of the tests that kill pipeline runners: a warm fork server to start them
(`forkserver.py`), their process trees, the store's RUNNING runs, the project's locks."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

__all__ = ["Runners", "alive", "blocked_locks", "descendants", "runs_by_status", "wait_gone"]


class Runners:
    """`nb-mlops` commands forked from one warm process (see `forkserver.py`)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("forkserver.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(cwd),
        )

    def _ask(self, request: dict[str, object]) -> dict[str, int | None]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        answer: dict[str, int | None] = json.loads(self.proc.stdout.readline())
        return answer

    def start(self, args: list[str], out: Path) -> int:
        """Start `nb-mlops ARGS` (output to `out`); returns its pid (a process group leader)."""
        pid = self._ask({"run": args, "cwd": str(self.cwd), "out": str(out)})["pid"]
        assert pid is not None
        return pid

    def wait(self, pid: int, timeout: float) -> int | None:
        """Its exit status (-N: killed by signal N), or None if it still runs after `timeout`."""
        return self._ask({"wait": pid, "timeout": timeout})["code"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def descendants(pid: int) -> list[psutil.Process]:
    """Every process started from `pid`, directly or not (kernels, the zygote, their children)."""
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait (bounded) until none of `procs` runs; returns those still running."""
    deadline = time.monotonic() + timeout
    left = alive(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = alive(left)
    return left


def runs_by_status(db: Path) -> dict[str, str]:
    """run id → MLflow status, for every run of the embedded store."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {str(r): str(s) for r, s in con.execute("SELECT run_uuid, status FROM runs")}
    finally:
        con.close()


def blocked_locks(locks_dir: Path) -> list[str]:
    """The project's lock files that another process still holds."""
    blocked = []
    for path in sorted(locks_dir.glob("*.lock")):
        try:
            with FileLock(str(path), timeout=0):
                pass
        except Timeout:
            blocked.append(path.name)
    return blocked
