"""Run a built pipeline: validate parameters, walk the DAG (`scheduler`) running ready steps in
parallel through an executor, reuse cached steps, record everything in MLflow (a parent run, one
child run per step), keep a status file up to date, and support `resume`.

The run's `state.json` is rewritten (atomically) at every change, so `--resume` works after the
runner is killed at any moment; Ctrl-C (or SIGTERM through the CLI) kills the running kernels at
once and leaves the run resumable. All MLflow calls happen on the calling thread; executors only
report events through a queue.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import graphlib
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import PipelineError
from nb_mlops.core.owners import owner_token
from nb_mlops.pipeline import cache as step_cache
from nb_mlops.pipeline.execute import StepResult, StepTask
from nb_mlops.pipeline.kernel import DONE_FILE
from nb_mlops.pipeline.params import parse_cli_values, validate
from nb_mlops.pipeline.record import Recorder
from nb_mlops.pipeline.scheduler import Options, Scheduler
from nb_mlops.pipeline.settle import forget, mark_live, owner_alive, settle_dead_runs, write_json
from nb_mlops.pipeline.spec import Pipeline, load_pipeline, pipeline_hash

__all__ = ["PipelineInterrupted", "PipelineRun", "StepState", "find_run_dir", "run_pipeline"]

STATE_FILE = "state.json"
PINS_TAG = "nb_mlops.data_pins"  # the parent run's data pins, JSON {NAME: OTHER@vN}
_PARAM_LIMIT = 6000  # MLflow's param value limit


@dataclass
class StepState:
    """A step's progress in one run."""

    name: str
    status: str = "QUEUED"
    duration: float | None = None
    cached: bool = False
    error: str | None = None
    cell: str | None = None
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "duration": None if self.duration is None else round(self.duration, 3),
            "cell": self.cell,
            "cached": self.cached,
            "error": self.error,
            "run_id": self.run_id,
        }


@dataclass
class PipelineRun:
    """The result of `run_pipeline` (and, via `as_dict`, of `nb-mlops pipeline run --json`)."""

    run_id: str
    pipeline: str
    status: str
    run_dir: Path
    params: dict[str, Any]
    started: str
    steps: dict[str, StepState] = field(default_factory=dict)
    duration: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reproduced: bool | None = None
    experiment_id: str | None = None
    data_pins: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def error(self) -> str | None:
        """The first step error, if any."""
        return next((s.error for s in self.steps.values() if s.error), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "started": self.started,
            "duration": None if self.duration is None else round(self.duration, 3),
            "run_dir": str(self.run_dir),
            "params": self.params,
            "steps": {name: s.as_dict() for name, s in self.steps.items()},
            "metrics": self.metrics,
            "reproduced": self.reproduced,
            "data_pins": self.data_pins,
        }


class PipelineInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM through the CLI) stopped a pipeline run: its kernels are killed, its
    MLflow runs KILLED, and `run` (a `PipelineRun`, status CANCELLED) can be resumed."""

    def __init__(self, run: PipelineRun) -> None:
        super().__init__(f"pipeline run {run.run_id} interrupted")
        self.run = run


def _now_ms() -> int:
    return int(time.time() * 1000)


_write_json = write_json  # atomic: readers (the server polling a status file) never see half


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short: SIGINT and SIGTERM wait until it ends
    (only the main thread can change handlers; elsewhere nothing is deferred)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
            signal.signal(sig, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def find_run_dir(cfg: Config, run_id: str) -> Path:
    """The folder of pipeline run `run_id` under `.nb_mlops/runs/`.

    Raises:
        PipelineError: no such run folder.
    """
    if run_id and all(ch.isalnum() or ch in "-_" for ch in run_id):
        for folder in cfg.runs_dir.glob(f"*/{run_id}"):
            if (folder / STATE_FILE).is_file():
                return Path(folder)
    raise PipelineError(f"no pipeline run {run_id!r} under {cfg.runs_dir}; check the run id")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)  # value files are never edited: sharing the inode is safe
    except OSError:
        shutil.copy2(src, dst)


def _param_str(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _PARAM_LIMIT else text[: _PARAM_LIMIT - 3] + "..."


class _Run:
    """One pipeline run in progress (the state `run_pipeline` drives)."""

    def __init__(
        self,
        cfg: Config,
        spec: Pipeline,
        params: dict[str, Any],
        *,
        rec: Recorder,
        mode: str,
        tags: Mapping[str, str] | None,
        status_file: Path | None,
        progress: Callable[[dict[str, Any]], None] | None,
        data_pins: dict[str, str] | None = None,
    ) -> None:
        self.cfg, self.spec, self.params = cfg, spec, params
        self.data_pins = dict(data_pins or {})  # snapshot NAME → OTHER@vN its restores read
        self.mode = mode
        self.rec = rec
        self.experiment = cfg.experiment or spec.notebook_path.stem
        self.exp_id = self.rec.experiment(self.experiment)
        self.source_name = spec.source_name(cfg)
        # who runs it: a later command marks the run KILLED once this process is gone
        self.owner = owner_token(os.getpid())
        self.base_tags = {
            "nb_mlops.mode": mode,
            "nb_mlops.pipeline": spec.name,
            "mlflow.source.type": "NOTEBOOK",
            "mlflow.source.name": self.source_name,
            "nb_mlops.notebook_sha256": spec.notebook_sha256,
            "nb_mlops.owner": self.owner,
        }
        self.extra_tags = dict(tags or {})
        self.run_id = ""  # set by `start`
        self.run_dir = cfg.runs_dir / spec.name
        self.param_strs = {k: _param_str(v) for k, v in params.items()}
        self.started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.t0 = time.monotonic()
        self.states = {name: StepState(name) for name in spec.steps}
        self.markers: dict[str, dict[str, Any]] = {}
        self.stopped: dict[str, str] = {}  # step → how it ended the run early (sys.exit(0))
        self.skipped: set[str] = set()  # steps not run because of such an early end
        self.step_metrics: dict[str, dict[str, float]] = {}
        self.step_data_tags: dict[str, dict[str, str]] = {}
        self.status = "RUNNING"
        self.error: str | None = None
        self.status_file = status_file
        self.progress = progress
        self.code_sha = {
            name: hashlib.sha256(spec.step_path(name).read_bytes()).hexdigest()
            for name in spec.steps
        }

    def start(self) -> None:
        """Create the parent MLflow run, the run folder, its first state and its live marker."""
        tags = {**self.base_tags, **self.extra_tags}
        if self.data_pins:
            tags[PINS_TAG] = json.dumps(self.data_pins, sort_keys=True)
        self.run_id = self.rec.create_run(self.exp_id, self.spec.name, tags)
        self.run_dir = self.cfg.runs_dir / self.spec.name / self.run_id
        mark_live(self.cfg, self.run_id, self.owner, self.run_dir / STATE_FILE)
        (self.run_dir / "values").mkdir(parents=True, exist_ok=True)
        self.save_state()
        self.rec.log(self.run_id, params=self.param_strs)

    @property
    def client(self) -> Any:
        """MlflowClient, for reads (imported on first use)."""
        return self.rec.client

    # --- status ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.spec.name,
            "status": self.status,
            "started": self.started,
            "steps": {name: s.as_dict() for name, s in self.states.items()},
        }

    def state(self) -> dict[str, Any]:
        """What `state.json` holds: enough to resume (markers of the finished steps) and to tell
        whether the run's owner still runs it."""
        return {
            **self.snapshot(),
            "duration": round(time.monotonic() - self.t0, 3),
            "run_dir": str(self.run_dir),
            "params": self.params,
            "data_pins": self.data_pins,
            "owner": self.owner,
            "experiment_id": self.exp_id,
            "error": self.error,
            "markers": self.markers,
            "step_metrics": self.step_metrics,
            "step_data_tags": self.step_data_tags,
        }

    def save_state(self) -> None:
        if self.run_id:
            _write_json(self.run_dir / STATE_FILE, self.state())

    def publish(self, save: bool = True) -> None:
        """Tell the status file and the progress display; with `save`, the state file too."""
        if save:
            self.save_state()
        snap = self.snapshot()
        if self.status_file is not None:
            _write_json(self.status_file, snap)
        if self.progress is not None:
            try:
                self.progress(snap)
            except Exception:  # a broken progress display must not break the run
                self.progress = None

    def abandon(self, status: str, reason: str) -> PipelineRun:
        """The run stops before its end (Ctrl-C, an internal error): the steps that ran or
        waited are CANCELLED, every MLflow run still RUNNING is KILLED, the state is saved
        (resumable) and the live marker removed."""
        self.status = status
        self.error = reason
        for state in self.states.values():
            if state.status == "RUNNING":
                state.status, state.error = "CANCELLED", f"interrupted: {reason}"
            elif state.status == "QUEUED":
                state.status, state.error = "CANCELLED", "not run: the run was interrupted"
        if self.run_id:
            # best effort, each on its own: the first error (the one raised) says what failed
            with contextlib.suppress(Exception):
                if self.run_id in self.rec.kill_tree(self.run_id, reason):
                    self.rec.log(self.run_id, tags={"nb_mlops.status": status})
            with contextlib.suppress(Exception):
                self.publish()
            forget(self.cfg, self.run_id)
        return self.result(None, {})

    def result(self, reproduced: bool | None, metrics: dict[str, float]) -> PipelineRun:
        return PipelineRun(
            run_id=self.run_id,
            pipeline=self.spec.name,
            status=self.status,
            run_dir=self.run_dir,
            params=self.params,
            started=self.started,
            steps=self.states,
            duration=time.monotonic() - self.t0,
            metrics=metrics,
            reproduced=reproduced,
            experiment_id=self.exp_id,
            data_pins=self.data_pins,
        )

    # --- steps -------------------------------------------------------------------------------

    def values_dir(self, step: str) -> Path:
        return self.run_dir / "values" / step

    def input_digests(self, step: str) -> dict[str, str]:
        inputs = self.spec.steps[step].inputs
        return {
            name: self.markers[producer]["outputs"][name]["digest"]
            for name, producer in inputs.items()
        }

    def key(self, step: str) -> str:
        return step_cache.cache_key(
            self.code_sha[step],
            self.params,
            self.input_digests(step),
            step_cache.env_fingerprint(),
            self.data_pins,
        )

    def create_step_run(self, step: str, extra: dict[str, str] | None = None) -> str:
        tags = {
            **self.base_tags,
            "mlflow.parentRunId": self.run_id,
            "nb_mlops.step": step,
            **(extra or {}),
        }
        run_id = self.rec.create_run(self.exp_id, step, tags)
        self.rec.log(run_id, params=self.param_strs)
        return run_id

    def reuse(self, step: str, entry: dict[str, Any], how: str) -> None:
        """A cached (or resumed) step: link its values in, record a finished child run."""
        src = Path(entry["values_dir"])
        marker = entry["marker"]
        dst = self.values_dir(step)
        step_cache.link_values(src, dst, marker)
        _write_json(dst / DONE_FILE, marker)
        notebook = Path(entry.get("output_notebook", ""))
        state = self.states[step]
        state.run_id = self.create_step_run(
            step, {"nb_mlops.cached": "true", "nb_mlops.cached_from": entry.get("step_run_id", "")}
        )
        metrics = dict(entry.get("metrics", {}))
        self.rec.log(state.run_id, metrics={**metrics, "duration_s": 0.0})
        if notebook.is_file():
            _link_or_copy(notebook, self.run_dir / f"{step}.ipynb")
        self.rec.end(state.run_id, "FINISHED")
        self.markers[step] = marker
        self.step_metrics[step] = metrics
        self.step_data_tags[step] = dict(entry.get("data_tags", {}))
        state.status, state.cached, state.duration = "SUCCEEDED", True, 0.0
        state.cell = how

    def task(self, step: str, timeout: float | None, cell_timeout: float | None) -> StepTask:
        state = self.states[step]
        spec = self.spec.steps[step]
        inputs = {
            name: str(self.values_dir(producer) / self.markers[producer]["outputs"][name]["file"])
            for name, producer in spec.inputs.items()
        }
        env = {"NB_MLOPS_RUN_ID": state.run_id or "", "NB_MLOPS_STEP": step}
        memory = self.cfg.settings.get("step_memory_limit_mb")
        context = {
            "params": self.params,
            "inputs": inputs,
            "outputs_dir": str(self.values_dir(step)),
            "env": env,
            "memory_limit_mb": memory,
        }
        if self.data_pins:
            context["data_pins"] = self.data_pins
        return StepTask(
            pipeline=self.spec.name,
            step=step,
            notebook=str(self.spec.step_path(step)),
            output=str(self.run_dir / f"{step}.ipynb"),
            values_dir=str(self.values_dir(step)),
            context=context,
            env={**self.kernel_env(), **env},
            cwd=self.cwd(),
            timeout=timeout,
            cell_timeout=cell_timeout,
        )

    def kernel_env(self) -> dict[str, str]:
        return {
            "NB_MLOPS_ROOT": str(self.cfg.root),
            "NB_MLOPS_PARENT_RUN_ID": self.run_id,
            "NB_MLOPS_MODE": self.mode,
            "NB_MLOPS_NOTEBOOK": self.source_name,
            "NB_MLOPS_PIPELINE": self.spec.name,
            "NB_MLOPS_EXPERIMENT": self.experiment,
        }

    def cwd(self) -> str:
        # relative paths in the notebook mean what they meant interactively
        folder = self.spec.notebook_path.parent
        return str(folder if folder.is_dir() else self.spec.dir)

    def collect(self, step: str) -> None:
        """Metrics (last values) and data tags of a finished step run and of its nested runs."""
        state = self.states[step]
        assert state.run_id is not None
        metrics: dict[str, float] = {}
        tags: dict[str, str] = {}
        for i, (values, run_tags) in enumerate(self.rec.values(state.run_id, self.exp_id)):
            metrics.update({k: v for k, v in values.items() if i or k != "duration_s"})
            tags.update({k: v for k, v in run_tags.items() if k.startswith("nb_mlops.data.")})
        self.step_metrics[step] = metrics
        self.step_data_tags[step] = tags

    def finish_step(self, result: StepResult) -> None:
        state = self.states[result.step]
        assert state.run_id is not None
        state.duration = result.duration
        state.error = result.error
        state.status = result.status
        state.cell = result.cell if result.status == "FAILED" else None
        notebook = self.run_dir / f"{result.step}.ipynb"
        tags = {"nb_mlops.status": result.status}
        if result.error:
            tags["nb_mlops.error"] = result.error[:5000]
        self.rec.log(state.run_id, metrics={"duration_s": result.duration}, tags=tags)
        if notebook.is_file():
            self.rec.log_artifact(state.run_id, self.exp_id, notebook)
        self.rec.end(state.run_id, "FINISHED" if result.status == "SUCCEEDED" else "FAILED")
        if result.status == "SUCCEEDED":
            self.markers[result.step] = result.marker
            self.collect(result.step)

    def done(self, sorter: graphlib.TopologicalSorter[str], step: str) -> None:
        """Let the steps after a succeeded `step` run, unless it ended the run early: papermill
        calls sys.exit(0) a successful end of the notebook, so nothing after it runs."""
        how = self.markers.get(step, {}).get("stopped")
        if not how:
            sorter.done(step)
            return
        self.stopped[step] = how
        state = self.states[step]
        state.cell = (
            f"{state.cell}, stopped early: {how}" if state.cell else f"stopped early: {how}"
        )

    def not_run(self, step: str) -> None:
        """A step that never started: after a failure, or after a step that ended the run early."""
        state = self.states[step]
        state.status = "CANCELLED"
        seen, todo = set(), list(self.spec.steps[step].after)
        while todo:
            before = todo.pop()
            if before not in seen:
                seen.add(before)
                todo.extend(self.spec.steps[before].after)
        if any(self.states[b].status == "FAILED" for b in seen) or not self.stopped.keys() & seen:
            state.error = "not run: an upstream step failed"
            return
        first = next(b for b in self.spec.steps if b in seen and b in self.stopped)
        self.skipped.add(step)
        state.cell = f"not run: step {first!r} ended the run early ({self.stopped[first]})"

    def cancel_waiting(self) -> None:
        """The steps still queued when the walk ended never ran: say why."""
        for state in self.states.values():
            if state.status == "QUEUED":
                self.not_run(state.name)

    # --- the end -----------------------------------------------------------------------------

    def finish(self) -> PipelineRun:
        from nb_mlops.pipeline.repro import check_reproduction

        failed = any(
            s.status != "SUCCEEDED" and s.name not in self.skipped for s in self.states.values()
        )
        self.status = "FAILED" if failed else "SUCCEEDED"
        metrics: dict[str, float] = {}
        data_tags: dict[str, str] = {}
        for step in self.spec.steps:
            metrics.update(self.step_metrics.get(step, {}))
            metrics.update(self.markers.get(step, {}).get("metrics", {}))
            data_tags.update(self.step_data_tags.get(step, {}))
        duration = time.monotonic() - self.t0
        files = [p for p in self.spec.files() if p.is_file()]
        phash = pipeline_hash(files, self.spec.dir)
        tags = {**data_tags, "nb_mlops.status": self.status, "nb_mlops.pipeline_hash": phash}
        reproduced = None
        if not failed:
            reproduced = check_reproduction(self, metrics)
            if reproduced is not None:
                tags["nb_mlops.reproduced"] = "true" if reproduced else "false"
        self.rec.log(self.run_id, metrics={**metrics, "duration_s": duration}, tags=tags)
        for path in files:
            rel = path.relative_to(self.spec.dir).parent.as_posix()
            self.rec.log_artifact(
                self.run_id, self.exp_id, path, "pipeline" if rel == "." else f"pipeline/{rel}"
            )
        self.rec.end(self.run_id, "FAILED" if failed else "FINISHED")
        result = self.result(reproduced, metrics)
        result.duration = duration
        state = result.as_dict()
        state["markers"] = self.markers
        state["step_metrics"] = self.step_metrics
        state["step_data_tags"] = self.step_data_tags
        state["owner"] = self.owner
        state["experiment_id"] = self.exp_id
        _write_json(self.run_dir / STATE_FILE, state)
        forget(self.cfg, self.run_id)
        self.publish(save=False)
        return result


def _prior_state(cfg: Config, resume: str) -> dict[str, Any]:
    folder = find_run_dir(cfg, resume)
    try:
        state: dict[str, Any] = json.loads((folder / STATE_FILE).read_text())
        if not isinstance(state.get("steps"), dict):
            raise ValueError("no steps")
    except (OSError, ValueError) as exc:
        # written atomically, never half: only a crash of the machine itself leaves this
        raise PipelineError(
            f"the state of pipeline run {resume} ({folder / STATE_FILE}) cannot be read ({exc}); "
            "run the pipeline afresh (the step cache still reuses its finished steps)"
        ) from None
    state["_dir"] = str(folder)
    return state


def _check_resumable(state: dict[str, Any], resume: str) -> None:
    if state.get("status") == "RUNNING" and owner_alive(str(state.get("owner", ""))):
        host, _, rest = str(state.get("owner", "")).partition(":")
        pid = rest.partition(":")[0]
        raise PipelineError(
            f"pipeline run {resume} is still running (process {pid} on {host}); "
            "wait for it to end or stop it, then resume it"
        )


def _prior_for(cfg: Config, spec: Pipeline, resume: str | None) -> dict[str, Any] | None:
    """The state of the run to resume (None: a fresh run); it must be a run of `spec`."""
    if not resume:
        return None
    prior = _prior_state(cfg, resume)
    if prior.get("pipeline") != spec.name:
        raise PipelineError(
            f"run {resume} belongs to pipeline {prior.get('pipeline')!r}, not {spec.name!r}"
        )
    return prior


def _values(
    spec: Pipeline,
    params: Mapping[str, Any] | None,
    prior: dict[str, Any] | None,
    from_strings: bool,
) -> dict[str, Any]:
    """The validated parameter values: the resumed run's when none are given."""
    if prior is not None and params is None:
        return validate(spec.parameters, prior.get("params", {}))
    if from_strings and params:  # command-line text: read as every command line reads it
        params = parse_cli_values(
            spec.parameters,
            typed={k: v for k, v in params.items() if not isinstance(v, str)},
            text={k: v for k, v in params.items() if isinstance(v, str)},
        )
    return validate(spec.parameters, params)


def _data_pins(
    cfg: Config, data: Mapping[str, str] | None, prior: dict[str, Any] | None
) -> dict[str, str]:
    """The run's data pins, checked against the store: a resumed run keeps the ones it had (its
    finished steps were computed on that data)."""
    from nb_mlops.core.data.pins import check_pins, pins_json
    from nb_mlops.core.errors import DataError

    try:
        pins = pins_json(data)
        if prior is not None:
            before = dict(prior.get("data_pins") or {})
            if data is not None and pins != before:
                raise PipelineError(
                    f"run {prior.get('run_id')} ran with data pins {before or 'none'}, not "
                    f"{pins}: resume it without --data, or start a new run"
                )
            pins = before
        check_pins(pins, cfg)
    except DataError as exc:
        raise PipelineError(str(exc)) from None
    return pins


def _open_run(
    cfg: Config,
    spec: Pipeline,
    values: dict[str, Any],
    prior: dict[str, Any] | None,
    resume: str | None,
    mode: str,
    tags: Mapping[str, str] | None,
    status_file: str | os.PathLike[str] | None,
    progress: Callable[[dict[str, Any]], None] | None,
    data: Mapping[str, str] | None,
) -> tuple[_Run, dict[str, Any] | None]:
    """The new run (not started yet), and the resumed run's state as it is once the runs of
    dead runners are settled."""
    data_pins = _data_pins(cfg, data, prior)  # before anything runs
    extra_tags = dict(tags or {})
    rec = Recorder(cfg)
    settle_dead_runs(cfg, rec)  # runs of runners that died: KILLED, and resumable
    if resume:
        assert prior is not None
        prior = {**_prior_state(cfg, resume), "_dir": prior["_dir"]}  # as settled
        _check_resumable(prior, resume)
        extra_tags["nb_mlops.resumed_from"] = resume
    run = _Run(
        cfg,
        spec,
        values,
        rec=rec,
        mode=mode,
        tags=extra_tags,
        status_file=Path(status_file) if status_file else None,
        progress=progress,
        data_pins=data_pins,
    )
    return run, prior


def _drive(run: _Run, scheduler: Scheduler) -> PipelineRun:
    """Start the run, walk its DAG and finish it; on any exception (Ctrl-C included) stop the
    executor and leave the run resumable."""
    try:
        run.start()
        run.publish()
        scheduler.walk()
        scheduler.close()
        run.cancel_waiting()
        return run.finish()
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        with _signals_deferred():
            scheduler.abort()
            if interrupted:
                # a KeyboardInterrupt raised for a signal other than SIGINT names it
                reason = f"interrupted ({exc or 'Ctrl-C'})"
            else:
                reason = f"the runner failed: {type(exc).__name__}: {exc}"
            stopped = run.abandon("CANCELLED" if interrupted else "FAILED", reason)
        if interrupted:
            raise PipelineInterrupted(stopped) from exc
        raise


def run_pipeline(
    name_or_dir: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    *,
    executor: str = "local",
    max_parallel: int | None = None,
    cache: bool = True,
    resume: str | None = None,
    mode: str = "pipeline",
    tags: Mapping[str, str] | None = None,
    status_file: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    timeout: float | None = None,
    cell_timeout: float | None = None,
    from_strings: bool = False,
    data: Mapping[str, str] | None = None,
    cfg: Config | None = None,
) -> PipelineRun:
    """Run a built pipeline and record it in MLflow.

    Args:
        name_or_dir: pipeline name (`pipelines/NAME` under the root) or its folder.
        params: parameter values; validated against the schema before anything runs.
        executor: `local` or `dask://HOST:PORT` (or a plugin's scheme).
        max_parallel: steps at once (default: the number of CPUs).
        cache: reuse steps whose code, parameters, inputs and environment are unchanged.
        resume: a pipeline run id: re-run only its failed and not-run steps (others are reused).
        mode: `pipeline` or `production` (tag `nb_mlops.mode`).
        tags: extra tags for the parent run.
        status_file: a JSON file kept up to date while the run goes (atomic writes).
        progress: called with the same JSON-like snapshot at each change.
        timeout: wall-clock seconds per step before the watchdog kills its kernel (config
            `step_timeout`, default none).
        cell_timeout: seconds per cell (config `cell_timeout`, default none).
        from_strings: `params` values that are strings are CLI text, coerced losslessly.
        data: data pins, NAME → OTHER@vN: each step's `restore(NAME)` reads OTHER@vN instead.
        cfg: the project configuration (default: found from the cwd).

    Returns:
        The `PipelineRun` (status SUCCEEDED or FAILED; a failure does not raise).

    Raises:
        ParameterError: bad parameter names or values (nothing has run).
        PipelineError: no such pipeline, run to resume or pinned data; an unknown executor.

    Example:
        >>> run = run_pipeline("quickstart", {"C": 0.5})      # doctest: +SKIP
        >>> run.status, run.steps["train"].cached             # doctest: +SKIP
        ('SUCCEEDED', False)
    """
    cfg = cfg or load_config()
    spec = load_pipeline(name_or_dir, cfg)
    prior = _prior_for(cfg, spec, resume)
    values = _values(spec, params, prior, from_strings)
    options = Options.of(cfg, executor, max_parallel, cache, timeout, cell_timeout)
    run, prior = _open_run(
        cfg, spec, values, prior, resume, mode, tags, status_file, progress, data
    )
    return _drive(run, Scheduler(run, prior, options))
