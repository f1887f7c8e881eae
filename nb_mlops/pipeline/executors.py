# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""Executors run step tasks: `local` (threads driving papermill, each step in its own fresh kernel,
kernels pre-started while earlier steps run, forked from a per-run zygote: `zygote.py`;
`NB_MLOPS_FORK_KERNELS=0` launches them the usual way) and `dask://HOST:PORT` (tasks on an existing
Dask cluster). A small registry in papermill's style; plugins come from the `nb_mlops.executors`
entry-point group (name = URL scheme, value = a factory like `LocalExecutor`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.metadata import entry_points
from typing import Any, Protocol

from nb_mlops.core.errors import PipelineError
from nb_mlops.pipeline.execute import (
    OnCell,
    StepResult,
    StepTask,
    kernel_env,
    prepare,
    run_step,
    start_kernel,
    stop_kernel,
)

__all__ = ["DaskExecutor", "Executor", "LocalExecutor", "get_executor", "register"]

Done = Callable[[StepResult], None]
# how long a kernel start may wait for the zygote's imports before launching a kernel the usual way
ZYGOTE_WAIT = 10.0


class Executor(Protocol):
    """What the runner needs from an executor."""

    def warm(self, count: int) -> None:
        """Hint: `count` more steps may need a kernel soon (pre-start them if useful)."""

    def submit(self, task: StepTask, on_cell: OnCell, done: Done) -> None:
        """Run `task`; call `done(result)` from any thread when it ends (never raise there)."""

    def close(self) -> None:
        """Release everything (no kernel may outlive this call)."""


def _failed(task: StepTask, exc: BaseException) -> StepResult:
    return StepResult(
        task.step,
        "FAILED",
        0.0,
        error=f"step {task.step!r} could not run: {type(exc).__name__}: {exc}",
    )


class LocalExecutor:
    """Steps run in threads of this process; each drives papermill against its own kernel.

    Every step gets a fresh kernel, started ahead while earlier steps run (the runner says how
    many steps may become ready next: `warm`), so a step rarely waits for one; a finished step's
    kernel is killed at once and reaped after its result is reported.
    """

    def __init__(
        self,
        spec: str = "local",
        *,
        max_parallel: int,
        env: dict[str, str],
        cwd: str,
        log: str | None = None,
    ) -> None:
        self.log = log
        self.max_parallel = max(1, max_parallel)
        self.env = kernel_env(env)
        self.cwd = cwd
        # the executor is made when the first step must run: its kernel, too, is forked from the
        # zygote, whose imports take less than a launched kernel's start (and overlap ours)
        self._zygote: Any = None  # without one, kernels are launched the usual way
        if os.environ.get("NB_MLOPS_FORK_KERNELS", "1").strip().lower() not in ("0", "false", "no"):
            from nb_mlops.pipeline.zygote import Zygote

            with contextlib.suppress(OSError):
                self._zygote = Zygote(self.env, self.cwd)
        prepare()
        self._steps = ThreadPoolExecutor(self.max_parallel, thread_name_prefix="nb-mlops-step")
        # two spares start at once: a forked kernel takes longer to answer (≈ 0.2 s) than a
        # trivial step takes to run, so one at a time would leave a linear chain waiting; a
        # step that finds no spare starts its own kernel in its own thread at once
        self._starter = ThreadPoolExecutor(2, thread_name_prefix="nb-mlops-kernel")
        self._spares: list[Future[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._waiting = 0  # submitted steps that have not taken their kernel yet

    def _start(self) -> Future[Any]:
        return self._starter.submit(
            start_kernel,
            self.env,
            self.cwd,
            log=self.log,
            preload=True,
            zygote=self._zygote,
            zygote_wait=ZYGOTE_WAIT,
        )

    def warm(self, count: int) -> None:
        with self._lock:
            if self._closed:
                return
            # the runner's not-yet-submitted steps, plus submitted ones waiting for a free slot
            want = min(count + self._waiting, self.max_parallel) - len(self._spares)
            for _ in range(max(0, want)):
                self._spares.append(self._start())

    def _take(self) -> Future[Any] | None:
        with self._lock:
            self._waiting -= 1
            return self._spares.pop(0) if self._spares else None

    def submit(self, task: StepTask, on_cell: OnCell, done: Done) -> None:
        with self._lock:
            self._waiting += 1

        def work() -> None:
            km = None
            dead: list[Any] = []
            spare = self._take()  # when a slot is free: a spare started meanwhile is used
            try:
                if spare is not None:
                    try:
                        km = spare.result()
                    except Exception:
                        km = None  # the spare failed to start: run_step starts (and reports) one
                result = run_step(
                    task,
                    km=km,
                    on_cell=on_cell,
                    log=self.log,
                    reap=dead.append,
                    zygote=self._zygote,
                    zygote_wait=ZYGOTE_WAIT,
                )
            except BaseException as exc:  # never leave the runner waiting
                if km is not None and not dead:
                    stop_kernel(km)
                result = _failed(task, exc)
            done(result)
            for gone in dead:  # already killed; reaping waits for no one
                stop_kernel(gone)

        self._steps.submit(work)

    def close(self) -> None:
        with self._lock:
            spares, self._spares = self._spares, []
            self._closed = True
        for spare in spares:
            if not spare.cancel():
                with contextlib.suppress(Exception):
                    stop_kernel(spare.result())
        self._steps.shutdown(wait=True)
        self._starter.shutdown(wait=True)
        if self._zygote:
            self._zygote.close()


class DaskExecutor:
    """Steps run as tasks on an existing Dask distributed cluster (`dask://HOST:PORT`)."""

    def __init__(
        self, spec: str, *, max_parallel: int, env: dict[str, str], cwd: str, log: str | None = None
    ) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise PipelineError(
                "the dask executor needs dask.distributed: pip install 'nb_mlops[dask]'"
            ) from exc
        hostport = spec.split("://", 1)[1]
        address = "tcp://" + hostport
        host, _, port = hostport.rpartition(":")
        try:
            # a refused port fails in milliseconds here, where the Dask client would keep retrying
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
            self.client = Client(address, timeout=30, set_as_default=False)
        except (OSError, ValueError) as exc:
            raise PipelineError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc

    def warm(self, count: int) -> None:
        return None

    def submit(self, task: StepTask, on_cell: OnCell, done: Done) -> None:
        future = self.client.submit(
            run_step, task, pure=False, key=f"nb-mlops-{task.step}-{id(task)}"
        )

        def finished(fut: Any) -> None:
            try:
                done(fut.result())
            except BaseException as exc:
                done(_failed(task, exc))

        future.add_done_callback(finished)

    def close(self) -> None:
        self.client.close()


_REGISTRY: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "dask": DaskExecutor}


def register(scheme: str, factory: Callable[..., Executor]) -> None:
    """Add an executor for `scheme://...` specs (plugins may also use the entry-point group)."""
    _REGISTRY[scheme] = factory


def check_spec(spec: str) -> None:
    """Refuse an unknown executor before anything runs.

    Raises:
        PipelineError: the scheme is neither built in nor a plugin's (the known ones are listed).
    """
    scheme = spec.split("://", 1)[0] if "://" in spec else spec
    # scanning the installed distributions' entry points costs ≈ 30 ms: only for a plugin's scheme
    plugins = (
        set()
        if scheme in _REGISTRY
        else {ep.name for ep in entry_points(group="nb_mlops.executors")}
    )
    if scheme not in _REGISTRY and scheme not in plugins:
        known = sorted({*_REGISTRY, *plugins})
        raise PipelineError(
            f"unknown executor {spec!r}; use one of: {', '.join(known)} (e.g. dask://HOST:PORT)"
        )
    if scheme == "dask" and not re.match(r"^dask://[^:/]+:\d+$", spec):
        raise PipelineError(f"executor {spec!r} is not dask://HOST:PORT")


def get_executor(
    spec: str, *, max_parallel: int, env: dict[str, str], cwd: str, log: str | None = None
) -> Executor:
    """The executor for `local`, `dask://HOST:PORT` or a plugin's `SCHEME://...`.

    Raises:
        PipelineError: an unknown scheme (the known ones are listed).
    """
    scheme = spec.split("://", 1)[0] if "://" in spec else spec
    factory = _REGISTRY.get(scheme)
    if factory is None:
        for ep in entry_points(group="nb_mlops.executors"):
            if ep.name == scheme:
                factory = ep.load()
                break
    if factory is None:
        known = sorted({*_REGISTRY, *(ep.name for ep in entry_points(group="nb_mlops.executors"))})
        raise PipelineError(
            f"unknown executor {spec!r}; use one of: {', '.join(known)} (e.g. dask://HOST:PORT)"
        )
    return factory(spec, max_parallel=max_parallel, env=env, cwd=cwd, log=log)
