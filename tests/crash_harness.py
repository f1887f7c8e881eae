"""Kill processes at random moments of acknowledged work, many times, cheaply.

A warm *zygote* process imports nb_mlops, mlflow and pandas once; for each kill point it
forks a child that loops over random operations — a tracked run, a DataFrame or file snapshot, a
promotion — and appends one acknowledgement line (JSON) after each call that returned. The test
SIGKILLs the child at a random moment, then checks that every acknowledged record is there. A fork
costs milliseconds, so a test affords a hundred kill points.

Other workloads plug in through `Zygote(workload=...)`: any function `(seed, ack) -> None` importable
from the tests folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Ack", "Zygote", "mixed_workload"]

Ack = Callable[[dict[str, Any]], None]

_ZYGOTE = """
import importlib, json, os, signal, sys
sys.path.insert(0, {tests!r})
module, name = {workload!r}.split(":")
workload = getattr(importlib.import_module(module), name)
prepare = getattr(importlib.import_module(module), "prepare", None)
if prepare is not None:
    prepare()  # heavy imports and caches, once, before any fork
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the kernel
print("ready", flush=True)
for line in sys.stdin:
    seed, ack_path = line.split(" ", 1)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the child waits for its own subprocesses
        fd = os.open(ack_path.strip(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        def ack(record, fd=fd):
            os.write(fd, (json.dumps(record) + "\\n").encode())
        try:
            workload(int(seed), ack)
        except BaseException:
            import traceback
            traceback.print_exc()
            ack({{"op": "error", "error": traceback.format_exc()}})
        finally:
            os._exit(0)
    print(pid, flush=True)
"""


class Zygote:
    """A warm process that forks workload children on demand (stop it with `close`)."""

    def __init__(
        self,
        root: Path,
        workload: str = "crash_harness:mixed_workload",
        env: dict[str, str] | None = None,
    ) -> None:
        tests = str(Path(__file__).parent)
        code = textwrap.dedent(_ZYGOTE.format(tests=tests, workload=workload))
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = False

    def wait_ready(self) -> None:
        """Block until the zygote has imported and warmed up (it starts at once, in parallel)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.close()
            raise RuntimeError(f"the zygote did not start (said {line!r})")
        self.ready = True

    def fork(self, seed: int, ack_path: Path) -> int:
        """Start a child running the workload with `seed`; return its pid."""
        if not self.ready:
            self.wait_ready()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{seed} {ack_path}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def kill_after(self, seed: int, ack_path: Path, seconds: float) -> list[dict[str, Any]]:
        """Fork a child, SIGKILL it `seconds` after it started working; return its
        acknowledgements (the first is `{"op": "start"}`)."""
        pid = self.fork(seed, ack_path)
        deadline = time.monotonic() + 30
        while not read_acks(ack_path) and time.monotonic() < deadline:
            time.sleep(0.002)  # a loaded machine may take a while to schedule the child
        time.sleep(seconds)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        return read_acks(ack_path)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} survived SIGKILL for {timeout} s")


def read_acks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # a line cut by the kill is not an acknowledgement
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


# --- the mixed workload: tracking, snapshots, promotion ---------------------------------------

MODEL = "crash-model"


def prepare() -> None:
    """Import and warm up in the zygote what every child needs (no thread may be started)."""
    import mlflow  # noqa: F401
    import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    import nb_mlops  # noqa: F401
    from nb_mlops.core import promotion, tracking  # noqa: F401
    from nb_mlops.core.capture.environment import environment
    from nb_mlops.core.config import load_config
    from nb_mlops.core.data import frames  # noqa: F401

    environment()  # cached per process: children inherit it
    tracking._mlflow_ready(load_config())  # SQLAlchemy's pragmas and MLflow's URIs; no thread
    # the test writes the runs to promote while this process imports; then warm MLflow's stores
    # and SQLAlchemy's caches on them (reads only)
    candidates = Path("candidates.json")
    deadline = time.monotonic() + 600
    while not candidates.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    promotion.evaluate(json.loads(candidates.read_text())[0], model=MODEL)


def _after_fork() -> None:
    """SQLAlchemy's rule for a forked child: drop the parent's pooled connections, unclosed."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Registry
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as Tracking

    for engines in (Tracking._engine_map, Registry._engine_map):
        for engine in engines.values():
            engine.dispose(close=False)


def mixed_workload(seed: int, ack: Ack) -> None:
    """Random acknowledged operations until killed."""
    _after_fork()
    rnd = random.Random(seed)
    ack({"op": "start", "pid": os.getpid()})
    step = 0
    while True:
        step += 1
        choice = rnd.random()
        if choice < 0.5:
            _tracked_run(rnd, seed, step, ack)
        elif choice < 0.75:
            _frame_snapshot(rnd, seed, step, ack)
        elif choice < 0.88:
            _file_snapshot(rnd, seed, step, ack)
        else:
            _promotion(rnd, ack)


def _tracked_run(rnd: random.Random, seed: int, step: int, ack: Ack) -> None:
    import nb_mlops

    name = f"s{seed}-{step}"
    points = rnd.choice([1, 5, 50, 500, 3000])
    params = {f"p{k}": rnd.randint(0, 9) for k in range(rnd.randint(0, 5))}
    with nb_mlops.track(name=name, autolog=False) as run:
        run.log_params(params)
        for i in range(points):
            nb_mlops.log(loss=1.0 / (i + 1))
        nb_mlops.log(acc=seed + step / 1000)
    ack(
        {
            "op": "run",
            "run_id": run.run_id,
            "params": {k: str(v) for k, v in params.items()},
            "points": points,
            "acc": seed + step / 1000,
        }
    )


def _frame_snapshot(rnd: random.Random, seed: int, step: int, ack: Ack) -> None:
    import numpy as np
    import pandas as pd

    from nb_mlops.core.data import snapshot

    rows = rnd.choice([10, 1_000, 20_000, 60_000])
    base = np.arange(rows)
    frame = pd.DataFrame({"a": base, "b": base * 0.5, "c": (base + seed + step) % 7})
    name = rnd.choice(["frame-a", "frame-b"])
    snap = snapshot(frame, name, wait=True)
    ack({"op": "snap", "name": name, "version": snap.version, "digest": snap.digest})


def _file_snapshot(rnd: random.Random, seed: int, step: int, ack: Ack) -> None:
    from nb_mlops.core.data import snapshot

    path = Path(f"data-{seed % 3}.bin")
    path.write_bytes(rnd.randbytes(rnd.choice([100, 50_000, 1_000_000])))
    snap = snapshot(path, f"file-{seed % 3}", wait=True)
    ack({"op": "snap", "name": snap.name, "version": snap.version, "digest": snap.digest})


def _promotion(rnd: random.Random, ack: Ack) -> None:
    from nb_mlops.core.errors import PromotionError
    from nb_mlops.core.promotion import promote

    candidates = json.loads(Path("candidates.json").read_text())
    try:
        decision = promote(rnd.choice(candidates), model=MODEL, reason="crash test")
    except PromotionError:
        return  # already the champion: nothing acknowledged
    ack({"op": "promote", "version": decision.version, "run_id": decision.run_id})
