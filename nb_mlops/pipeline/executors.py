# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""Executors run step tasks: `local` (threads driving papermill, each step in its own fresh kernel,
kernels pre-started while earlier steps run) and `dask://HOST:PORT` (tasks on an existing Dask
cluster). A small registry in papermill's style; plugins come from the `nb_mlops.executors`
entry-point group (name = URL scheme, value = a factory like `LocalExecutor`).
"""

from __future__ import annotations

import contextlib
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

    Kernels are started ahead (up to `max_parallel` spares) so a step rarely waits for one.
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
        prepare()
        self.log = log
        self.max_parallel = max(1, max_parallel)
        self.env = kernel_env(env)
        self.cwd = cwd
        self._steps = ThreadPoolExecutor(self.max_parallel, thread_name_prefix="nb-mlops-step")
        self._starter = ThreadPoolExecutor(self.max_parallel, thread_name_prefix="nb-mlops-kernel")
        self._spares: list[Future[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    def warm(self, count: int) -> None:
        with self._lock:
            want = min(count, self.max_parallel) - len(self._spares)
            for _ in range(max(0, want)):
                self._spares.append(
                    self._starter.submit(start_kernel, self.env, self.cwd, log=self.log)
                )

    def _take(self) -> Future[Any] | None:
        with self._lock:
            return self._spares.pop(0) if self._spares else None

    def submit(self, task: StepTask, on_cell: OnCell, done: Done) -> None:
        def work() -> None:
            km = None
            try:
                spare = self._take()
                if spare is not None:
                    try:
                        km = spare.result()
                    except Exception:
                        km = None  # the spare failed to start: run_step starts a fresh one
                result = run_step(task, km=km, on_cell=on_cell, log=self.log)
            except BaseException as exc:  # never leave the runner waiting
                if km is not None:
                    stop_kernel(km)
                result = _failed(task, exc)
            done(result)

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
    plugins = {ep.name for ep in entry_points(group="nb_mlops.executors")}
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
