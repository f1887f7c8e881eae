"""The DAG walk on its own (no kernel, no MLflow): a run and an executor that only record what
the scheduler asks of them."""

from __future__ import annotations

import graphlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nb_mlops.pipeline import scheduler as scheduler_module
from nb_mlops.pipeline.execute import StepResult
from nb_mlops.pipeline.runner import StepState
from nb_mlops.pipeline.scheduler import Options, Scheduler

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


class FakeRun:
    """What the scheduler uses of a run."""

    def __init__(self, graph: dict[str, list[str]], folder: Path) -> None:
        self.spec = SimpleNamespace(steps={n: SimpleNamespace(after=a) for n, a in graph.items()})
        self.states = {name: StepState(name) for name in graph}
        self.cfg = None
        self.run_dir = folder
        self.step_metrics: dict[str, dict[str, float]] = {}
        self.step_data_tags: dict[str, dict[str, str]] = {}
        self.reused: list[tuple[str, str]] = []
        self.cells: list[tuple[str, str | None]] = []

    def key(self, step: str) -> str:
        return f"key-{step}"

    def reuse(self, step: str, entry: dict[str, Any], how: str) -> None:
        self.reused.append((step, how))
        self.states[step].status = "SUCCEEDED"

    def done(self, sorter: graphlib.TopologicalSorter[str], step: str) -> None:
        sorter.done(step)

    def publish(self, save: bool = True) -> None:
        self.cells.append(("publish", None))

    def kernel_env(self) -> dict[str, str]:
        return {}

    def cwd(self) -> str:
        return str(self.run_dir)

    def create_step_run(self, step: str) -> str:
        return f"run-{step}"

    def task(self, step: str, timeout: float | None, cell_timeout: float | None) -> str:
        return step

    def values_dir(self, step: str) -> Path:
        return self.run_dir / "values" / step

    def finish_step(self, result: StepResult) -> None:
        self.states[result.step].status = result.status


class FakePool:
    """Runs each task at once: a cell start, then the result (FAILED for `fail`)."""

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.submitted: list[str] = []
        self.warmed: list[int] = []
        self.ended = ""

    def warm(self, count: int) -> None:
        self.warmed.append(count)

    def submit(self, task: str, on_cell: Any, done: Any) -> None:
        self.submitted.append(task)
        on_cell(task, 1, "cell #1")
        done(StepResult(task, "FAILED" if task in self.fail else "SUCCEEDED", 0.0))

    def close(self) -> None:
        self.ended = "closed"

    def abort(self) -> None:
        self.ended = "aborted"


class FakeScheduler(Scheduler):
    fail: set[str] = set()

    def executor(self) -> Any:
        if self.pool is None:
            self.pool = FakePool(self.fail)  # type: ignore[assignment]
        return self.pool


@pytest.fixture
def remembered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    keys: list[str] = []
    monkeypatch.setattr(scheduler_module.step_cache, "remember", lambda cfg, k, e: keys.append(k))
    return keys


def _walk(run: FakeRun, fail: set[str], prior: dict[str, Any] | None = None) -> FakeScheduler:
    sched = FakeScheduler(run, prior, Options(cache=False))  # type: ignore[arg-type]
    sched.fail = fail
    sched.walk()
    return sched


def test_steps_run_in_dag_order_and_successes_are_cached(
    tmp_path: Path, remembered: list[str]
) -> None:
    # Given a diamond DAG whose steps all succeed
    run = FakeRun(DIAMOND, tmp_path)
    # When the scheduler walks it
    sched = _walk(run, set())
    # Then each step is submitted once, after its upstream steps, and cached
    pool = sched.pool
    assert isinstance(pool, FakePool)
    assert pool.submitted == ["a", "b", "c", "d"]
    assert remembered == ["key-a", "key-b", "key-c", "key-d"]
    assert all(s.status == "SUCCEEDED" for s in run.states.values())
    assert sched.running == 0
    # And closing ends the executor once
    sched.close()
    assert pool.ended == "closed" and sched.pool is None


def test_a_failure_blocks_the_steps_after_it(tmp_path: Path, remembered: list[str]) -> None:
    # Given a diamond DAG whose first step fails
    run = FakeRun(DIAMOND, tmp_path)
    # When the scheduler walks it
    sched = _walk(run, {"a"})
    # Then nothing after it is submitted, and the walk ends (nothing runs, nothing is ready)
    assert isinstance(sched.pool, FakePool)
    assert sched.pool.submitted == ["a"]
    assert remembered == []
    assert [run.states[s].status for s in "abcd"] == ["FAILED", "QUEUED", "QUEUED", "QUEUED"]
    # And an abort (the walk raised) stops the executor at once
    sched.abort()
    assert sched.pool.ended == "aborted"


def test_a_resumed_run_reuses_the_steps_that_succeeded(
    tmp_path: Path, remembered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a resumed run whose step `a` succeeded with intact values, and `b` failed
    monkeypatch.setattr(scheduler_module.step_cache, "verify_outputs", lambda d, m: True)
    prior = {
        "_dir": str(tmp_path / "old"),
        "steps": {"a": {"status": "SUCCEEDED", "run_id": "r1"}, "b": {"status": "FAILED"}},
        "markers": {"a": {"outputs": {}}},
    }
    run = FakeRun({"a": [], "b": ["a"]}, tmp_path)
    # When the scheduler walks it
    sched = _walk(run, set(), prior)
    # Then `a` is reused from the resumed run and only `b` runs
    assert run.reused == [("a", "resumed")]
    assert isinstance(sched.pool, FakePool)
    assert sched.pool.submitted == ["b"]


def test_cell_starts_are_shown_while_a_step_runs(tmp_path: Path) -> None:
    # Given a running step
    run = FakeRun({"a": []}, tmp_path)
    sched = FakeScheduler(run, None, Options(cache=False))  # type: ignore[arg-type]
    run.states["a"].status = "RUNNING"
    # When a cell starts in it, and later in a step that no longer runs
    sched.handle(("cell", ("a", "cell #3 of the notebook")))
    run.states["a"].status = "FAILED"
    sched.handle(("cell", ("a", "cell #4 of the notebook")))
    # Then only the first is shown
    assert run.states["a"].cell == "cell #3 of the notebook"
