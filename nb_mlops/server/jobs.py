"""The job service: promote/run/retrain jobs as subprocesses, their state under `.nb_mlops/jobs/`.

A job is one JSON file `<jobs_dir>/<id>.json` plus a folder `<jobs_dir>/<id>/` holding the staged
copy of the notebook, the built pipeline, the runner's status file and the log (a retrain job
stages no notebook: it reruns the model's stored production pipeline on a data snapshot). Each job runs
`python -m nb_mlops.server.worker` in its own process group, never inside the server process. The
worker calls the pipeline and promotion functions itself and writes their progress and structured
outcome into the JSON file; the service reads it, and shows a job whose process is
gone (server restart, crash, kill) as FAILED rather than RUNNING for ever. The jobs list is paged
and made of bounded summaries (no parameter values, no results), cached while a record is
unchanged: a poll never re-reads nor re-sends what a job was given.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from nb_mlops.core.files import write_atomic

__all__ = [
    "ACTIONS",
    "ACTIVE",
    "RETRAIN",
    "JobNotFound",
    "JobService",
    "TERMINAL",
    "now_iso",
    "read_job",
    "update_job",
]

ACTIVE = ("QUEUED", "RUNNING")
TERMINAL = ("SUCCEEDED", "PROMOTED", "PENDING_APPROVAL", "BLOCKED", "FAILED", "CANCELLED")
ACTIONS = ("run", "promote")  # what POST jobs starts from a notebook
RETRAIN = "retrain"  # a job POST models/{name}/retrain starts: the champion's stored pipeline
_JOB_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{8}\Z")
# Fields kept for the service itself; never sent to the browser (no paths outside the root).
# (`cli`: what records written by earlier versions named their command with.)
_PRIVATE = ("pid", "pid_started", "project_root", "staged", "jobs_dir", "cli")
WORKER = ("-m", "nb_mlops.server.worker")
LOG_TAIL_LINES = 40
# what a jobs-list entry keeps of a record (each text clipped): what the jobs panel shows
_SUMMARY = (
    "id",
    "action",
    "status",
    "path",
    "pipeline",
    "model",
    "data",
    "user",
    "created",
    "started",
    "finished",
    "run_id",
    "model_version",
    "error",
    "links",
)
_TEXT = 500  # characters of any text in a summary
_MANY = 50  # entries of any list or mapping in a summary


class JobNotFound(LookupError):
    """No job with that id (mapped to 404)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _job_file(jobs_dir: Path, job_id: str) -> Path:
    return jobs_dir / f"{job_id}.json"


@contextlib.contextmanager
def _job_lock(jobs_dir: Path, job_id: str) -> Iterator[None]:
    with FileLock(str(jobs_dir / f"{job_id}.lock"), timeout=30):
        yield


def read_job(jobs_dir: Path, job_id: str) -> dict[str, Any]:
    """The stored record of one job.

    Raises:
        JobNotFound: malformed id or no record.
    """
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise JobNotFound(f"no job {job_id!r}; list jobs with GET /nb-mlops/api/jobs")
    try:
        data: dict[str, Any] = json.loads(_job_file(jobs_dir, job_id).read_text())
    except FileNotFoundError:
        raise JobNotFound(f"no job {job_id!r}; list jobs with GET /nb-mlops/api/jobs") from None
    return data


def _write_record(path: Path, data: dict[str, Any]) -> None:
    # key order kept: steps stay in DAG order
    write_atomic(path, json.dumps(data, indent=1).encode())


def update_job(jobs_dir: Path, job_id: str, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into a job record under its lock; a finished job is never reopened.

    Returns:
        The record after the update.
    """
    with _job_lock(jobs_dir, job_id):
        data = read_job(jobs_dir, job_id)
        if data.get("status") in TERMINAL and "status" in changes:
            # Cancelled (or finished) already: the worker's late writes must not resurrect it.
            changes = {k: v for k, v in changes.items() if k in ("steps", "log_closed")}
        data.update(changes)
        _write_record(_job_file(jobs_dir, job_id), data)
        return data


def _process_alive(pid: int | None, started: float | None) -> bool:
    """True when `pid` is still the process we started (not a zombie, not a reused pid)."""
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > 1.0:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16_384))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-lines:]


class JobService:
    """Create, list, inspect and cancel jobs of one server.

    Args:
        jobs_dir: where job records live (`<project root>/.nb_mlops/jobs`).
        worker: the command that runs one job, given `JOBS_DIR JOB_ID` (default: this Python's
            `-m nb_mlops.server.worker`).
        scrub: turns text that may hold paths or secrets into text safe to show.
    """

    def __init__(
        self,
        jobs_dir: Path,
        worker: list[str] | None = None,
        scrub: Any = None,
    ) -> None:
        self.jobs_dir = jobs_dir
        self.worker = worker or [sys.executable, *WORKER]
        self._scrub = scrub or (lambda text: text)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # file name → ((mtime_ns, size), summary) of finished jobs: they no longer change
        self._summaries: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    # --- create ---------------------------------------------------------------------------------

    def create(
        self,
        *,
        notebook: Path,
        rel_path: str,
        project_root: Path,
        pipeline: str,
        parameters: dict[str, Any],
        model: str | None,
        action: str,
        user: str,
    ) -> dict[str, Any]:
        """Stage the saved notebook, record the job as QUEUED and start its worker process.

        Returns:
            The public view of the new job.
        """
        job_id, folder = self._new_folder()
        # the job works on a copy taken now; later edits of the open notebook do not leak in.
        staged = folder / notebook.name
        shutil.copyfile(notebook, staged)
        record = _record(job_id, action, model, user, project_root)
        record.update(path=rel_path, pipeline=pipeline, parameters=parameters, staged=str(staged))
        return self._start(record, project_root, user)

    def create_retrain(
        self, *, model: str, data: str, promote: bool, project_root: Path, user: str
    ) -> dict[str, Any]:
        """Record a retrain of `model`'s champion pipeline on snapshot `data` and start it.

        The worker runs the stored production pipeline (no notebook is staged) and, with
        `promote`, promotes the run through the gates.
        """
        job_id, _folder = self._new_folder()
        record = _record(job_id, RETRAIN, model, user, project_root)
        record.update(path=None, pipeline=None, data=data, promote=promote, parameters={})
        return self._start(record, project_root, user)

    def _new_folder(self) -> tuple[str, Path]:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        job_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
        folder = self.jobs_dir / job_id
        folder.mkdir()
        return job_id, folder

    def _start(self, record: dict[str, Any], project_root: Path, user: str) -> dict[str, Any]:
        """Write the QUEUED record, then start the worker in its own process group."""
        job_id = record["id"]
        _write_record(_job_file(self.jobs_dir, job_id), record)
        log = (self.jobs_dir / job_id / "log.txt").open("ab")
        try:
            proc = subprocess.Popen(
                [*self.worker, str(self.jobs_dir), job_id],
                cwd=str(project_root),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel kills the whole tree
                env=_worker_env(project_root, user),
            )
        finally:
            log.close()
        self._procs[job_id] = proc
        started = _create_time(proc.pid)
        record = update_job(self.jobs_dir, job_id, pid=proc.pid, pid_started=started)
        return self.public(record)

    # --- read -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any]:
        """The public view of a job, with live step progress and the log tail."""
        self._reap()
        record = read_job(self.jobs_dir, job_id)
        view = self.public(self._reconciled(record))
        view["log_tail"] = [
            self._scrub(line) for line in _log_tail(self.jobs_dir / job_id / "log.txt")
        ]
        return view

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """A page of job summaries, newest first, and how many jobs there are.

        A summary is bounded whatever the job was given: no parameter values, no result, texts
        clipped; `get` has the full record.
        """
        self._reap()
        if not self.jobs_dir.is_dir():
            return [], 0
        paths = sorted(self.jobs_dir.glob("*.json"), reverse=True)  # ids start with the time
        jobs = []
        for path in paths[offset : offset + limit]:
            with contextlib.suppress(JobNotFound, json.JSONDecodeError, OSError):
                jobs.append(self._summary_of(path))
        return jobs, len(paths)

    def _summary_of(self, path: Path) -> dict[str, Any]:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._summaries.get(path.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        record = self._reconciled(read_job(self.jobs_dir, path.stem))
        summary = self.summary(record)
        if record.get("status") in TERMINAL:
            self._summaries[path.name] = (key, summary)
        return summary

    def summary(self, record: dict[str, Any]) -> dict[str, Any]:
        """The bounded view of a job for the jobs list."""
        view = {k: _clip(record.get(k)) for k in _SUMMARY if k in record}
        steps = record.get("steps")
        if isinstance(steps, dict):
            view["steps"] = {
                str(name)[:100]: {
                    k: _clip(v)
                    for k, v in (step.items() if isinstance(step, dict) else ())
                    if k in ("status", "duration", "cached", "cell", "error")
                }
                for name, step in list(steps.items())[:_MANY]
            }
        gates = record.get("gates")
        if isinstance(gates, list):
            view["gates"] = [_clip(gate) for gate in gates[:_MANY]]
        for key in ("error", "steps", "gates"):
            if view.get(key):
                view[key] = self._scrub_json(view[key])
        return view

    def public(self, record: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in record.items() if k not in _PRIVATE}
        for key in ("error", "result", "gates", "steps"):
            if view.get(key):
                view[key] = self._scrub_json(view[key])
        return view

    def _scrub_json(self, value: Any) -> Any:
        """Scrub every string of a JSON value (results hold absolute paths and URIs)."""
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list):
            return [self._scrub_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub_json(v) for k, v in value.items()}
        return value

    def _reconciled(self, record: dict[str, Any]) -> dict[str, Any]:
        """Fold in the runner's live status file; show a dead job as FAILED (read-only view)."""
        record = dict(record)
        status_file = self.jobs_dir / record["id"] / "status.json"
        if record.get("status") in ACTIVE and status_file.exists():
            with contextlib.suppress(OSError, ValueError):
                live = json.loads(status_file.read_text())
                if isinstance(live.get("steps"), dict):
                    record["steps"] = live["steps"]
                record["run_id"] = record.get("run_id") or live.get("run_id")
        if record.get("status") in ACTIVE and not _process_alive(
            record.get("pid"), record.get("pid_started")
        ):
            record["status"] = "FAILED"
            record["error"] = record.get("error") or "the job process ended unexpectedly"
        return record

    def reconcile_all(self) -> int:
        """At server start: persist FAILED for jobs whose process is gone. Returns how many."""
        if not self.jobs_dir.is_dir():
            return 0
        fixed = 0
        for path in self.jobs_dir.glob("*.json"):
            with contextlib.suppress(JobNotFound, json.JSONDecodeError, OSError):
                record = read_job(self.jobs_dir, path.stem)
                if record.get("status") in ACTIVE and not _process_alive(
                    record.get("pid"), record.get("pid_started")
                ):
                    update_job(
                        self.jobs_dir,
                        record["id"],
                        status="FAILED",
                        finished=now_iso(),
                        error="the job process ended while the server was down",
                    )
                    fixed += 1
        return fixed

    def _reap(self) -> None:
        for job_id, proc in list(self._procs.items()):
            if proc.poll() is not None:
                del self._procs[job_id]

    # --- cancel ---------------------------------------------------------------------------------

    def cancel(self, job_id: str, grace: float = 3.0) -> dict[str, Any]:
        """Kill the job's whole process tree (worker, kernels) and mark it CANCELLED.

        Returns:
            The public view after the cancel (a finished job is returned unchanged).
        """
        record = read_job(self.jobs_dir, job_id)
        if record.get("status") not in ACTIVE:
            return self.public(record)
        with _job_lock(self.jobs_dir, job_id):
            _kill_tree(record.get("pid"), record.get("pid_started"), grace)
            record = read_job(self.jobs_dir, job_id)
            if record.get("status") in ACTIVE:
                record.update(status="CANCELLED", finished=now_iso(), error="cancelled by the user")
                _write_record(_job_file(self.jobs_dir, job_id), record)
        self._reap()
        return self.public(record)

    def shutdown(self) -> None:
        """Reap finished children; running jobs keep going (their state is on disk)."""
        self._reap()


def _record(
    job_id: str, action: str, model: str | None, user: str, project_root: Path
) -> dict[str, Any]:
    """A new QUEUED job record (the caller adds what its action needs)."""
    return {
        "id": job_id,
        "action": action,
        "status": "QUEUED",
        "model": model,
        "user": user,
        "created": now_iso(),
        "started": None,
        "finished": None,
        "run_id": None,
        "steps": {},
        "gates": [],
        "model_version": None,
        "result": None,
        "error": None,
        "project_root": str(project_root),
    }


def _clip(value: Any, depth: int = 0) -> Any:
    """`value` with every text cut to `_TEXT` characters and every collection to `_MANY`
    entries (three levels deep at most)."""
    if isinstance(value, str):
        return value if len(value) <= _TEXT else value[: _TEXT - 1] + "…"
    if depth >= 3 and isinstance(value, (dict, list)):
        return "…"
    if isinstance(value, dict):
        return {str(k)[:100]: _clip(v, depth + 1) for k, v in list(value.items())[:_MANY]}
    if isinstance(value, list):
        return [_clip(v, depth + 1) for v in value[:_MANY]]
    return value


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _worker_env(project_root: Path, user: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # the server's own secrets and kernel wiring are none of the job's business
        if not k.startswith(("JUPYTER_TOKEN", "JPY_", "NB_MLOPS_RUN_ID", "NB_MLOPS_PARENT_RUN_ID"))
    }
    env["NB_MLOPS_ROOT"] = str(project_root)
    env["NB_MLOPS_USER"] = user
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill_tree(pid: int | None, started: float | None, grace: float) -> None:
    """SIGTERM then SIGKILL the worker, its process group and every descendant.

    Kernels run in sessions of their own (jupyter_client starts them so), so killing the group is
    not enough: the descendants are collected first (the worker is a child subreaper, so orphans
    stay in its tree) and signalled one by one.
    """
    if not _process_alive(pid, started):
        return
    import psutil

    assert pid is not None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    groups = set()
    own_group = os.getpgid(0)
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            groups.add(os.getpgid(proc.pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups - {own_group}:
            with contextlib.suppress(OSError):
                os.killpg(group, sig)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _gone, alive = psutil.wait_procs(procs, timeout=grace)
        if not alive:
            break
        procs = alive
