"""The process behind one job: build the staged notebook's pipeline, run it, promote it.

Started by the job service as `python -m nb_mlops.server.worker JOBS_DIR JOB_ID` in its own process
group, never inside the server. `execute` is the entry point: it calls `nb_mlops.pipeline`,
`nb_mlops.core.monitoring.actions` (retrain jobs) and `nb_mlops.core.promotion` directly (typed values, no shell, no code built from request strings)
and returns an `Outcome`; `main` writes the outcome and the live progress into the job record.
SIGTERM and SIGHUP (a cancel) stop the run as Ctrl-C does: kernels killed, MLflow runs KILLED.
It imports no tornado nor jupyter_server.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb_mlops.server.jobs import RETRAIN, TERMINAL, now_iso, read_job, update_job

__all__ = ["Outcome", "Stopped", "execute", "main"]

_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Outcome:
    """What a job ended with, as stored in its record.

    Attributes:
        status: SUCCEEDED (run), PROMOTED, BLOCKED (a gate failed; nothing changed) or FAILED.
        run_id: the pipeline run (None when nothing ran).
        steps: step name → status, duration, cached, cell, error.
        gates: every gate result of a promotion (gate, verdict, measured, expected, detail).
        model_version: the champion version after a promotion.
        result: the pipeline run (run jobs) or the promotion decision (promote jobs), as JSON.
        error: one line saying what went wrong (FAILED, BLOCKED).
    """

    status: str
    run_id: str | None = None
    steps: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    model_version: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def changes(self, model: str | None) -> dict[str, Any]:
        """The job record's fields for this outcome (links into the tracking UI included)."""
        data: dict[str, Any] = {"status": self.status, "finished": now_iso()}
        links: dict[str, str] = {}
        if self.run_id:
            data["run_id"] = self.run_id
            links["run"] = f"#/runs/{self.run_id}"
        if self.model_version is not None:
            links["model_version"] = f"#/models/{model}/versions/{self.model_version}"
        if links:
            data["links"] = links
        if self.steps:
            data["steps"] = self.steps
        if self.gates:
            data["gates"] = self.gates
        data["model_version"] = self.model_version
        data["result"] = self.result
        data["error"] = self.error
        return data


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a cancel), raised where Ctrl-C would be, so the run cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def execute(
    job: dict[str, Any],
    folder: Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
    note: Callable[[str], None] = lambda text: None,
) -> Outcome:
    """Build, run and (for a promote job) promote the staged notebook of `job`; a retrain job
    runs the model's stored production pipeline instead (promoted when the job asks).

    Args:
        job: the job record (action, staged, pipeline, parameters, model, project_root).
        folder: the job's folder (the pipeline is built into `folder/pipeline`; the runner's
            live status goes to `folder/status.json`).
        progress: called with the runner's snapshot (run_id, status, steps) at each change.
        note: receives one line per stage, for the job's log.

    Returns:
        The outcome; a failure is an outcome too (FAILED, with the one-line reason).

    Raises:
        KeyboardInterrupt: the run was stopped (Ctrl-C, or `Stopped` for a cancel); its MLflow
            runs are KILLED by then.
    """
    from nb_mlops.core.config import load_config
    from nb_mlops.core.errors import NbMlopsError

    cfg = load_config(Path(job["project_root"]))
    promote = job["action"] == "promote" or bool(job.get("promote"))
    if promote and cfg.problems:
        # a bad setting must never open a gate: refuse before running anything
        return Outcome("FAILED", error="; ".join(cfg.problems))
    if job["action"] == RETRAIN:
        return _retrain(job, cfg, note)
    try:
        note(f"building pipeline {job['pipeline']}")
        _build(job, folder / "pipeline", cfg, note)
    except NbMlopsError as exc:
        return Outcome("FAILED", error=str(exc))
    return _run(job, folder, cfg, progress, note)


def _run(
    job: dict[str, Any],
    folder: Path,
    cfg: Any,
    progress: Callable[[dict[str, Any]], None] | None,
    note: Callable[[str], None],
) -> Outcome:
    """Run the built pipeline; promote its model for a promote job."""
    from nb_mlops.core.errors import NbMlopsError
    from nb_mlops.pipeline import run_pipeline

    promote = job["action"] == "promote"
    note("running the pipeline" + (" (no cache: the promoted model must be fresh)" * promote))
    try:
        run = run_pipeline(
            folder / "pipeline",
            job.get("parameters") or {},
            # the promoted model must be one this run computed: a cached step holds none
            cache=not promote,
            status_file=folder / "status.json",
            progress=progress,
            cfg=cfg,
        )
    except NbMlopsError as exc:
        return Outcome("FAILED", error=str(exc))
    ran = run.as_dict()
    steps = {name: step.as_dict() for name, step in run.steps.items()}
    if not run.succeeded:
        error = run.error or f"pipeline run {run.run_id} failed"
        return Outcome("FAILED", run_id=run.run_id, steps=steps, result=ran, error=error)
    if not promote:
        return Outcome("SUCCEEDED", run_id=run.run_id, steps=steps, result=ran)
    if not run.run_id:
        return Outcome("FAILED", steps=steps, result=ran, error="the run has no id; cannot promote")
    return _promote(job, run.run_id, steps, cfg, note)


def _retrain(job: dict[str, Any], cfg: Any, note: Callable[[str], None]) -> Outcome:
    """Run the champion's stored pipeline as a retrain on `job["data"]` (what a monitoring
    policy runs), then, when asked, promote it through the gates."""
    from nb_mlops.core.errors import NbMlopsError
    from nb_mlops.core.monitoring import actions

    model, data = job["model"], job["data"]
    note(f"retraining {model}'s production pipeline on {data}")
    try:
        outcome = actions.retrain(
            model,
            data,
            trigger=None,
            reason=f"retrain on {data} requested by {job.get('user') or 'unknown'}",
            cfg=cfg,
        )
    except NbMlopsError as exc:
        return Outcome("FAILED", error=str(exc))
    result = outcome.as_dict()
    if not outcome.succeeded or not outcome.run_id:
        error = outcome.error or f"retraining run {outcome.run_id} failed"
        return Outcome("FAILED", run_id=outcome.run_id, result=result, error=error)
    if not job.get("promote"):
        return Outcome("SUCCEEDED", run_id=outcome.run_id, result=result)
    return _promote(job, outcome.run_id, {}, cfg, note)


def _build(job: dict[str, Any], output: Path, cfg: Any, note: Callable[[str], None]) -> None:
    from nb_mlops.pipeline import build_pipeline
    from nb_mlops.pipeline.convert import BuildWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BuildWarning)
        spec = build_pipeline(job["staged"], name=job["pipeline"], output=output, cfg=cfg)
    for warning in caught:
        if issubclass(warning.category, BuildWarning):
            note(f"warning: {warning.message}")
    for text in spec.warnings:
        note(f"warning: {text}")


def _promote(
    job: dict[str, Any],
    run_id: str,
    steps: dict[str, Any],
    cfg: Any,
    note: Callable[[str], None],
) -> Outcome:
    from nb_mlops.core.errors import NbMlopsError
    from nb_mlops.core.promotion import PromotionBlocked, promote

    model = job["model"]
    note(f"promoting run {run_id} to {model}")
    try:
        # the journal names the server's authenticated user, not the account the server runs as
        decision = promote(run_id, model=model, cfg=cfg, who=job.get("user") or None)
    except PromotionBlocked as blocked:
        found = blocked.decision.as_dict()
        return Outcome(
            "BLOCKED",
            run_id=run_id,
            steps=steps,
            gates=found["gates"],
            result=found,
            error=str(blocked),
        )
    except NbMlopsError as exc:
        return Outcome("FAILED", run_id=run_id, steps=steps, error=str(exc))
    found = decision.as_dict()
    return Outcome(
        decision.status,  # PROMOTED, or PENDING_APPROVAL: a request waiting for an approver
        run_id=run_id,
        steps=steps,
        gates=found["gates"],
        model_version=None if decision.version is None else str(decision.version),
        result=found,
    )


class Worker:
    """Runs one job in this process, keeping its record current."""

    def __init__(self, jobs_dir: Path, job_id: str) -> None:
        self.jobs_dir = jobs_dir
        self.job_id = job_id
        self.job = read_job(jobs_dir, job_id)
        self.folder = jobs_dir / job_id
        self.log = (self.folder / "log.txt").open("ab", buffering=0)
        self.stopping = False

    def update(self, **changes: Any) -> dict[str, Any]:
        self.job = update_job(self.jobs_dir, self.job_id, **changes)
        return self.job

    def note(self, text: str) -> None:
        self.log.write(f"[nb-mlops job] {text}\n".encode())

    def progress(self, snap: dict[str, Any]) -> None:
        """The runner's snapshot → the record's steps and run id (a cancelled job keeps its
        status: `update_job` never reopens a finished record). Once stopped, the record is left
        alone: a cancel holds its lock while it waits for this process to end."""
        if self.stopping:
            return
        changes: dict[str, Any] = {}
        if isinstance(snap.get("steps"), dict):
            changes["steps"] = snap["steps"]
        run_id = snap.get("run_id")
        if run_id and not self.job.get("run_id"):
            changes.update(run_id=run_id, links={"run": f"#/runs/{run_id}"})
        if changes:
            self.update(**changes)

    def fail(self, message: str) -> int:
        self.note(f"FAILED: {message}")
        self.update(status="FAILED", finished=now_iso(), error=message)
        return 1

    def run(self) -> int:
        job = self.update(status="RUNNING", started=now_iso())
        outcome = execute(job, self.folder, progress=self.progress, note=self.note)
        self.note(outcome.status + (f": {outcome.error}" if outcome.error else ""))
        self.update(**outcome.changes(job.get("model")))
        return 1 if outcome.status == "FAILED" else 0

    def cancelled(self) -> bool:
        return read_job(self.jobs_dir, self.job_id).get("status") in TERMINAL


def _become_subreaper() -> None:
    """Orphaned grandchildren (kernels whose papermill died) stay in our tree, so cancel finds
    them."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@contextlib.contextmanager
def _stopped_by_signals(worker: Worker) -> Iterator[None]:
    def stop(signum: int, _frame: Any) -> None:
        worker.stopping = True
        raise Stopped(signum)

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def main(argv: list[str]) -> int:
    jobs_dir, job_id = Path(argv[0]), argv[1]
    _become_subreaper()
    worker = Worker(jobs_dir, job_id)
    try:
        with _stopped_by_signals(worker):
            return worker.run()
    except KeyboardInterrupt as exc:
        # a cancel has marked the job CANCELLED already; any other stop is a failure
        if not worker.cancelled():
            worker.fail(f"stopped by {exc or 'an interrupt'}")
        cause = exc.__cause__ if isinstance(exc.__cause__, KeyboardInterrupt) else exc
        return 128 + int(getattr(cause, "signum", signal.SIGINT))
    except Exception as exc:  # the record must end FAILED, never stay RUNNING
        return worker.fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
