"""The pipeline crash test: runners of a tiny four-step pipeline are killed at random moments —
SIGKILL (kill -9), SIGTERM, or SIGINT to the process group (a terminal's Ctrl-C) — before the run
exists, while it starts, inside a step, between steps, during the final recording. After each
kill: nothing the runner started is left, no lock blocks the next command. Each chain of killed
runs ends with a `--resume` that completes, with the values of an uninterrupted run; by then no
run of the store is RUNNING any more (the next command marked the dead runner's runs KILLED).

Runners are forked from one warm process (`forkserver.py`), so ≥ 30 kill points fit in a couple
of minutes. `NB_MLOPS_CRASH_KILLS` sets how many (default 30), `NB_MLOPS_CRASH_SEED` the seed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from nb_mlops.core.config import load_config
from nb_mlops.pipeline import build_pipeline
from tests.crashutil import Runners, alive, blocked_locks, descendants, runs_by_status, wait_gone
from tests.nbutil import new_notebook

CELLS = [
    ("seed: int = 1", ["parameters"]),
    ("base = [seed * i for i in range(5)]", ["step:load"]),
    ("left = sum(base)", ["step:left", "prev:load"]),
    ("right = max(base) * 2", ["step:right", "prev:load"]),
    ("total = left + right", ["step:total", "prev:left", "prev:right"]),
    ("print(total)", ["pipeline-metrics"]),
]
KILLS = int(os.environ.get("NB_MLOPS_CRASH_KILLS", "30"))
BOUND = 20.0  # generous bound on every wait: a stop or a clean-up takes well under a second
SIGNALS = [signal.SIGKILL] * 4 + [signal.SIGTERM] * 3 + [signal.SIGINT] * 3
MODES = ["early", "random", "in a step", "between steps", "final recording"]
# exit statuses a killed runner may end with (0: it finished before the signal landed)
EXITS = {
    signal.SIGKILL: {-signal.SIGKILL, 0},
    signal.SIGTERM: {128 + signal.SIGTERM, -signal.SIGTERM, 0},
    signal.SIGINT: {128 + signal.SIGINT, 0},
}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _ended(pid: int) -> bool:
    """The runner has exited (a zombie until the fork server collects it)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _phase(snap: dict[str, Any] | None) -> str:
    """Where a run was, from its last published status."""
    if snap is None:
        return "before the run exists"
    steps = [s["status"] for s in snap["steps"].values()]
    if "RUNNING" in steps:
        return "in a step"
    done = steps.count("SUCCEEDED")
    if done == 0:
        return "before the first step"
    return "final recording" if done == len(steps) else "between steps"


def _project_processes(root: Path) -> list[psutil.Process]:
    """Every live process working for this project (kernels and zygotes carry NB_MLOPS_ROOT)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("NB_MLOPS_ROOT") == str(root):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


class Harness:
    """Starts, watches and kills runners of pipeline `crash`; checks what each kill leaves."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.cfg = load_config()
        self.runners = Runners(root)
        self.kills: collections.Counter[str] = collections.Counter()
        self.signals: collections.Counter[str] = collections.Counter()
        self.killed_runs: list[str] = []
        self.count = 0
        self.links = 0

    def start(self, seed: int, resume: str | None) -> tuple[int, Path]:
        self.links += 1
        status = self.root / f"status-{self.links}.json"
        args = ["pipeline", "run", "crash", "--no-cache", "--max-parallel", "2"]
        args += ["--resume", resume] if resume else ["-p", f"seed={seed}"]
        pid = self.runners.start([*args, "--status-file", str(status)], status.with_suffix(".out"))
        return pid, status

    def finish(self, seed: int, resume: str | None) -> dict[str, Any]:
        """Run to the end; returns the final state of the run."""
        pid, status = self.start(seed, resume)
        code = self.runners.wait(pid, 300)
        out = status.with_suffix(".out").read_text()
        assert code == 0, f"the run to completion exited {code}:\n{out[-3000:]}"
        snap = _read(status)
        assert snap is not None
        state = _read(self.cfg.runs_dir / "crash" / snap["run_id"] / "state.json")
        assert state is not None
        return state

    def kill_one(self, seed: int, resume: str | None, duration: float) -> str | None:
        """Start a runner, kill it as the drawn mode says; returns the run to resume next
        (None: it finished before the signal, nothing to resume)."""
        sig = self.rng.choice(SIGNALS)
        mode = self.rng.choice(MODES)
        pid, status = self.start(seed, resume)
        started = time.monotonic()
        fire_at = started + (
            self.rng.uniform(0, 0.4) if mode == "early" else self.rng.uniform(0, duration)
        )
        done_before = 0
        snap = None
        seen = 0
        while True:
            if _ended(pid):
                self.runners.wait(pid, BOUND)
                return None  # it ended before the moment came: no kill point
            with contextlib.suppress(OSError):
                if status.stat().st_mtime_ns != seen:  # parse only what changed
                    seen = status.stat().st_mtime_ns
                    snap = _read(status) or snap
            steps = [] if snap is None else [s["status"] for s in snap["steps"].values()]
            now = time.monotonic()
            if mode in ("early", "random") and now >= fire_at:
                break
            if mode == "in a step" and "RUNNING" in steps:
                mode, fire_at = "random", now + self.rng.uniform(0, 0.3)
            if mode == "between steps" and steps.count("SUCCEEDED") > done_before:
                if "RUNNING" not in steps:
                    break
                done_before = steps.count("SUCCEEDED")
            if (
                mode == "final recording"
                and steps
                and set(steps) == {"SUCCEEDED"}
                and snap is not None
                and snap["status"] == "RUNNING"
            ):
                break
            assert now - started < 300, f"runner {pid} never reached {mode}"
            time.sleep(0.005)
        tree = descendants(pid)
        phase = _phase(snap)
        if sig == signal.SIGINT:
            os.killpg(pid, sig)  # what a terminal does: the whole foreground process group
        else:
            os.kill(pid, sig)
        code = self.runners.wait(pid, BOUND)
        out = status.with_suffix(".out").read_text()
        where = f"{sig.name} {phase} (run {snap and snap['run_id']})"
        assert code is not None, f"{where}: the runner still runs {BOUND:g} s later"
        assert code in EXITS[sig], f"{where}: exit status {code}\n{out[-3000:]}"
        if code == 0:
            return None
        self.count += 1
        self.kills[phase] += 1
        self.signals[sig.name] += 1
        # nothing it started is left, nor anything else working for the project
        assert wait_gone(tree, BOUND) == [], f"{where}: left {alive(tree)}"
        left = wait_gone(_project_processes(self.root), BOUND)
        assert left == [], f"{where}: left {[p.cmdline()[:3] for p in left]}"
        assert blocked_locks(self.cfg.locks_dir) == [], where
        killed = _read(status)
        if killed is None:
            return resume  # killed before its run existed: the earlier one is still the one
        self.killed_runs.append(killed["run_id"])
        return str(killed["run_id"])

    def check_settled(self) -> None:
        """After a command has run: no run of the store is RUNNING, nothing is left in progress."""
        statuses = runs_by_status(self.cfg.db_path)
        running = [run for run, status in statuses.items() if status == "RUNNING"]
        assert running == [], f"runs still RUNNING: {running}"
        for run_id in self.killed_runs:
            state = _read(self.cfg.runs_dir / "crash" / run_id / "state.json")
            assert state is None or state["status"] != "RUNNING", run_id
        assert list((self.cfg.runs_dir / ".live").glob("*.json")) == []


def _values(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, each step's output digests) of a finished run's state."""
    digests = {
        step: {name: out["digest"] for name, out in marker["outputs"].items()}
        for step, marker in state["markers"].items()
    }
    return state["metrics"], digests


def test_killed_runners_resume_to_the_values_of_an_uninterrupted_run(project: Path) -> None:
    seed = int(os.environ.get("NB_MLOPS_CRASH_SEED") or random.randrange(10**6))
    rng = random.Random(seed)
    new_notebook(project / "crash.ipynb", CELLS)
    build_pipeline(project / "crash.ipynb")
    harness = Harness(project, rng)
    began = time.monotonic()
    try:
        # Given uninterrupted runs of the pipeline (the reference values, and how long it takes)
        references = {}
        durations = []
        for value in (1, 2):
            t0 = time.monotonic()
            references[value] = _values(harness.finish(value, None))
            durations.append(time.monotonic() - t0)
            assert references[value][0] == {"total": 18.0 * value}
        duration = max(durations)
        # When chains of runners are killed at random moments, each chain resuming the last
        chains = 0
        while harness.count < KILLS:
            value = rng.choice((1, 2))
            resume: str | None = None
            want, before = rng.randint(2, 4), harness.count
            for _ in range(2 * want):  # a runner may finish before its moment comes
                if harness.count - before >= want or harness.count >= KILLS:
                    break
                resume = harness.kill_one(value, resume, duration) or resume
            # Then the last one, run to its end, completes with the uninterrupted values
            final = harness.finish(value, resume)
            assert final["status"] == "SUCCEEDED", (seed, final)
            assert _values(final) == references[value], f"seed {seed}: values differ"
            harness.check_settled()
            chains += 1
    finally:
        harness.runners.close()
    elapsed = time.monotonic() - began
    print(
        f"\n{harness.count} pipeline kill points in {elapsed:.0f} s ({chains} chains, seed {seed});"
        f" phases {dict(harness.kills)}; signals {dict(harness.signals)}"
    )
    assert harness.count >= KILLS
    assert len(harness.kills) >= 3, harness.kills  # the draw reaches several phases
