"""The DAG walk of one pipeline run: which steps are ready, running and done. A ready step is
reused (from the run being resumed, or from the step cache) or submitted to the executor; the
executor reports cell starts and results through a queue, read on the calling thread, so that
every MLflow call and state change happens there.
"""

from __future__ import annotations

import graphlib
import os
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb_mlops.core.config import Config
from nb_mlops.pipeline import cache as step_cache
from nb_mlops.pipeline.execute import StepResult
from nb_mlops.pipeline.executors import Executor, check_spec, get_executor

if TYPE_CHECKING:
    from nb_mlops.pipeline.runner import _Run

__all__ = ["Options", "Scheduler"]

# how often the waiting runner wakes up: a signal handled by another thread (zmq's, a step's)
# would otherwise leave Ctrl-C pending until the next step event
_POLL = 0.1

Event = tuple[str, Any]


@dataclass(frozen=True)
class Options:
    """How the steps of a run are executed."""

    executor: str = "local"
    max_parallel: int | None = None
    cache: bool = True
    timeout: float | None = None
    cell_timeout: float | None = None

    @classmethod
    def of(
        cls,
        cfg: Config,
        executor: str,
        max_parallel: int | None,
        cache: bool,
        timeout: float | None,
        cell_timeout: float | None,
    ) -> Options:
        """Checked options; the timeouts not given come from the config."""
        check_spec(executor)
        if timeout is None:
            timeout = cfg.settings.get("step_timeout")
        if cell_timeout is None:
            cell_timeout = cfg.settings.get("cell_timeout")
        return cls(executor, max_parallel, cache, timeout, cell_timeout)


def _next_event(events: queue.Queue[Event]) -> Event:
    while True:
        try:
            return events.get(timeout=_POLL)
        except queue.Empty:
            continue


class Scheduler:
    """Runs the steps of `run` in DAG order, at most `max_parallel` at once. The executor is made
    when the first step must run; `close` ends it after the walk, `abort` when the walk raised."""

    def __init__(self, run: _Run, prior: dict[str, Any] | None, options: Options) -> None:
        self.run = run
        self.prior = prior  # the state of the run being resumed
        self.options = options
        self.order = list(run.spec.steps)
        graph = {name: set(s.after) for name, s in run.spec.steps.items()}
        self.sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(graph)
        self.events: queue.Queue[Event] = queue.Queue()
        self.running = 0
        self.pool: Executor | None = None

    def walk(self) -> None:
        """Run the DAG to its end (or to a failure that blocks the rest)."""
        self.sorter.prepare()
        while self.sorter.is_active():
            ready = sorted(self.sorter.get_ready(), key=self.order.index)
            for step in ready:
                self.start(step)
            if self.pool is not None:
                # pre-start kernels for what comes later, while the submitted steps run
                self.pool.warm(self.waiting())
            if ready and all(self.run.states[s].status == "SUCCEEDED" for s in ready):
                continue  # all reused: they may have made other steps ready
            if self.running == 0:
                break  # nothing runs and nothing is ready: a failure blocks the rest
            self.handle(_next_event(self.events))

    def waiting(self) -> int:
        return sum(1 for s in self.run.states.values() if s.status == "QUEUED")

    # --- ready steps -------------------------------------------------------------------------

    def start(self, step: str) -> None:
        """Reuse a ready step if it can be, else submit it."""
        entry = self.reusable(step)
        if entry is None:
            self.submit(step)
        else:
            self.run.reuse(step, entry, "resumed" if self.prior is not None else "cached")
            self.run.done(self.sorter, step)
        self.run.publish()

    def reusable(self, step: str) -> dict[str, Any] | None:
        entry = self.resumed(step)
        if entry is None and self.options.cache:
            entry = step_cache.lookup(self.run.cfg, self.run.key(step))
        return entry

    def resumed(self, step: str) -> dict[str, Any] | None:
        """The step's cache entry from the run being resumed, if it succeeded there and its
        values are still intact."""
        prior = self.prior
        if prior is None or prior["steps"].get(step, {}).get("status") != "SUCCEEDED":
            return None
        old_dir = Path(prior["_dir"]) / "values" / step
        marker = prior.get("markers", {}).get(step)
        if not marker or not step_cache.verify_outputs(old_dir, marker):
            return None
        return {
            "values_dir": str(old_dir),
            "marker": marker,
            "metrics": prior.get("step_metrics", {}).get(step, {}),
            "data_tags": prior.get("step_data_tags", {}).get(step, {}),
            "step_run_id": prior["steps"][step].get("run_id"),
            "output_notebook": str(Path(prior["_dir"]) / f"{step}.ipynb"),
        }

    def executor(self) -> Executor:
        if self.pool is None:
            run = self.run
            self.pool = get_executor(
                self.options.executor,
                max_parallel=self.options.max_parallel or os.cpu_count() or 2,
                env=run.kernel_env(),
                cwd=run.cwd(),
                log=str(run.run_dir / "kernels.log"),
            )
        return self.pool

    def submit(self, step: str) -> None:
        pool = self.executor()
        state = self.run.states[step]
        state.run_id = self.run.create_step_run(step)
        state.status = "RUNNING"
        self.running += 1
        pool.submit(
            self.run.task(step, self.options.timeout, self.options.cell_timeout),
            lambda s, i, d: self.events.put(("cell", (s, d))),
            lambda result: self.events.put(("done", result)),
        )

    # --- events ------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        kind, payload = event
        if kind == "cell":
            self.cell_started(*payload)
        else:
            self.finished(payload)

    def cell_started(self, step: str, where: str) -> None:
        state = self.run.states[step]
        if state.status == "RUNNING":
            state.cell = where
            self.run.publish(save=False)

    def finished(self, result: StepResult) -> None:
        """A step ended: record it; a success goes into the cache and frees its successors."""
        run = self.run
        self.running -= 1
        run.finish_step(result)
        if result.status == "SUCCEEDED":
            step_cache.remember(run.cfg, run.key(result.step), self.entry(result))
            run.done(self.sorter, result.step)
        run.publish()

    def entry(self, result: StepResult) -> dict[str, Any]:
        run, step = self.run, result.step
        return {
            "values_dir": str(run.values_dir(step)),
            "marker": result.marker,
            "metrics": run.step_metrics.get(step, {}),
            "data_tags": run.step_data_tags.get(step, {}),
            "step_run_id": run.states[step].run_id,
            "output_notebook": str(run.run_dir / f"{step}.ipynb"),
        }

    # --- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        """End the executor after a walk that ended normally."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()

    def abort(self) -> None:
        """Stop the executor at once (its running kernels are killed) after the walk raised."""
        if self.pool is not None:
            getattr(self.pool, "abort", self.pool.close)()
