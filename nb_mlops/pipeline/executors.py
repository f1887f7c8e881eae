# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""Executors run step tasks: `local` (threads driving papermill, each step in its own fresh kernel,
kernels pre-started while earlier steps run, forked from a per-run zygote: `zygote.py`;
`NB_MLOPS_FORK_KERNELS=0` launches them the usual way) and `dask://HOST:PORT` (tasks on an existing
Dask cluster). A small registry in papermill's style; plugins come from the `nb_mlops.executors`
entry-point group (name = URL scheme, value = an `ExecutorFactory` such as a class like
`LocalExecutor`). `resolve` is the one lookup of a spec's executor.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from nb_mlops.core import plugins
from nb_mlops.core.errors import PipelineError, PluginError
from nb_mlops.pipeline.execute import (
    OnCell,
    StepResult,
    StepTask,
    kernel_env,
    kill_kernel,
    prepare,
    run_step,
    start_kernel,
    stop_kernel,
)

__all__ = [
    "DaskExecutor",
    "Executor",
    "ExecutorFactory",
    "LocalExecutor",
    "check_spec",
    "get_executor",
    "register",
    "resolve",
]

Done = Callable[[StepResult], None]
# how long a kernel start may wait for the zygote's imports before launching a kernel the usual way
ZYGOTE_WAIT = 10.0


class Executor(Protocol):
    """What the runner needs from an executor: it runs step tasks and reports their results.

    A task (`StepTask`) is self-contained and picklable: the step's notebook, parameters,
    staging folder and tracking context. `nb_mlops.pipeline.execute.run_step(task)` runs one in a
    fresh kernel of the machine it is called on and returns its `StepResult` (never raises for a
    failing step); an executor decides where and when that call happens (threads here, Dask
    workers, a batch system) and how many run at once.
    """

    def warm(self, count: int) -> None:
        """Hint: `count` more steps may need a kernel soon (pre-start them if useful)."""

    def submit(self, task: StepTask, on_cell: OnCell, done: Done) -> None:
        """Run `task`; call `done(result)` from any thread when it ends (never raise there)."""

    def close(self) -> None:
        """Release everything (no kernel may outlive this call)."""

    def abort(self) -> None:
        """Stop at once (Ctrl-C): kill the running steps' kernels, wait for nothing.

        Optional for plugins: the runner falls back to `close()`.
        """


def _failed(task: StepTask, exc: BaseException) -> StepResult:
    return StepResult(
        task.step,
        "FAILED",
        0.0,
        error=f"step {task.step!r} could not run: {type(exc).__name__}: {exc}",
    )


def _in_thread(fn: Callable[[], Any], name: str, gate: threading.Semaphore) -> Future[Any]:
    """`fn()` in a daemon thread once `gate` lets it in; a Future of its result.

    Not a ThreadPoolExecutor: the interpreter joins those threads at exit, so a process that
    stops on Ctrl-C would wait for the step a killed kernel leaves behind.
    """
    future: Future[Any] = Future()

    def body() -> None:
        with gate:
            if not future.set_running_or_notify_cancel():
                return  # cancelled while it waited for the gate
            try:
                result = fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    threading.Thread(target=body, name=name, daemon=True).start()
    return future


class LocalExecutor:
    """Steps run in threads of this process; each drives papermill against its own kernel.

    Every step gets a fresh kernel, started ahead while earlier steps run (the runner says how
    many steps may become ready next: `warm`), so a step rarely waits for one; a finished step's
    kernel is killed at once and reaped after its result is reported. `abort` kills every
    kernel at once and returns without waiting for the step threads.
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
        try:
            if os.environ.get("NB_MLOPS_FORK_KERNELS", "1").strip().lower() not in (
                "0",
                "false",
                "no",
            ):
                from nb_mlops.pipeline.zygote import Zygote

                with contextlib.suppress(OSError):
                    self._zygote = Zygote(self.env, self.cwd)
            prepare()
        except BaseException:  # Ctrl-C while starting: the zygote must not outlive us
            if self._zygote is not None:
                self._zygote.close(wait=1.0)
            raise
        self._slots = threading.Semaphore(self.max_parallel)
        # two spares start at once: a forked kernel takes longer to answer (≈ 0.2 s) than a
        # trivial step takes to run, so one at a time would leave a linear chain waiting; a
        # step that finds no spare starts its own kernel in its own thread at once
        self._starts = threading.Semaphore(2)
        self._spares: list[Future[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._waiting = 0  # submitted steps that have not taken their kernel yet
        self._kernels: dict[int, Any] = {}  # kernels the running steps use, by thread id
        self._threads: list[threading.Thread] = []

    def _start(self) -> Future[Any]:
        return _in_thread(
            lambda: start_kernel(
                self.env,
                self.cwd,
                log=self.log,
                preload=True,
                zygote=self._zygote,
                zygote_wait=ZYGOTE_WAIT,
            ),
            "nb-mlops-kernel",
            self._starts,
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

    def _using(self, km: Any) -> None:
        """A step thread's kernel, known to `abort` (killed at once if it already ran)."""
        with self._lock:
            if not self._closed:
                self._kernels[threading.get_ident()] = km
                return
        kill_kernel(km)

    def submit(self, task: StepTask, on_cell: OnCell, done: Done) -> None:
        with self._lock:
            self._waiting += 1

        def work() -> None:
            with self._slots:
                self._work(task, on_cell, done)

        thread = threading.Thread(target=work, name=f"nb-mlops-step-{task.step}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _work(self, task: StepTask, on_cell: OnCell, done: Done) -> None:
        km = None
        dead: list[Any] = []
        spare = self._take()  # when a slot is free: a spare started meanwhile is used
        try:
            if spare is not None:
                try:
                    km = spare.result()
                except Exception:
                    km = None  # the spare failed to start: run_step starts (and reports) one
            if self._closed:
                raise RuntimeError("the run was stopped")
            result = run_step(
                task,
                km=km,
                on_cell=on_cell,
                log=self.log,
                reap=dead.append,
                zygote=self._zygote,
                zygote_wait=ZYGOTE_WAIT,
                on_kernel=self._using,
            )
        except BaseException as exc:  # never leave the runner waiting
            if km is not None and not dead:
                stop_kernel(km)
            result = _failed(task, exc)
        finally:
            with self._lock:
                self._kernels.pop(threading.get_ident(), None)
        done(result)
        for gone in dead:  # already killed; reaping waits for no one
            stop_kernel(gone)

    def close(self) -> None:
        with self._lock:
            spares, self._spares = self._spares, []
            self._closed = True
            threads = list(self._threads)
        for spare in spares:
            if not spare.cancel():
                with contextlib.suppress(Exception):
                    stop_kernel(spare.result())
        for thread in threads:
            thread.join()
        if self._zygote:
            self._zygote.close()

    def abort(self) -> None:
        with self._lock:
            spares, self._spares = self._spares, []
            self._closed = True
            running = list(self._kernels.values())
        for km in running:
            kill_kernel(km)  # the step's papermill sees a dead kernel; nobody waits for it
        for spare in spares:
            if not spare.cancel():
                spare.add_done_callback(_kill_started)
        if self._zygote:
            # the kernels it forked, started or starting, die with it
            self._zygote.close(wait=1.0)


def _kill_started(future: Future[Any]) -> None:
    if future.exception() is None:
        km = future.result()
        kill_kernel(km)
        # reaping (connection file, the process entry) off the caller's path
        threading.Thread(target=stop_kernel, args=(km,), daemon=True).start()


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
        from nb_mlops.pipeline.shipped import plan

        try:
            # workers that cannot see the project get the step shipped: `shipped.py`
            self.shipper = plan(self.client, env, Path(log).parent if log else Path(cwd), address)
        except BaseException:
            self.client.close()
            raise

    def warm(self, count: int) -> None:
        return None

    def submit(self, task: StepTask, on_cell: OnCell, done: Done) -> None:
        from nb_mlops.pipeline.shipped import run_shipped

        shipper = self.shipper
        job: Any = task if shipper is None else shipper.pack(task)
        future = self.client.submit(
            run_step if shipper is None else run_shipped,
            job,
            pure=False,
            key=f"nb-mlops-{task.step}-{id(task)}",
        )

        def finished(fut: Any) -> None:
            try:
                out = fut.result()
                done(out if shipper is None else shipper.unpack(task, out))
            except BaseException as exc:
                done(_failed(task, exc))

        future.add_done_callback(finished)

    def close(self) -> None:
        self.client.close()

    def abort(self) -> None:
        # a task already running on a worker runs on there (its watchdog still bounds it)
        self.client.close(timeout=2)


class ExecutorFactory(Protocol):
    """Makes the executor of one pipeline run (a class such as `LocalExecutor` is one)."""

    def __call__(
        self,
        spec: str,
        *,
        max_parallel: int,
        env: dict[str, str],
        cwd: str,
        log: str | None = None,
    ) -> Executor:
        """An executor for `spec` (`SCHEME` or `SCHEME://...`, as the user gave it).

        Args:
            spec: the executor spec; the part after `://` is the executor's own.
            max_parallel: at most this many steps at once.
            env: environment variables the step kernels must see.
            cwd: the run's staging folder (the steps' working directory).
            log: a file kernels may write their output to.

        Raises:
            PipelineError: the executor cannot run here (a missing dependency, no cluster).
        """
        ...


_REGISTRY: dict[str, ExecutorFactory] = {"local": LocalExecutor, "dask": DaskExecutor}
_LOCK = threading.Lock()
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")


def register(scheme: str, factory: ExecutorFactory) -> None:
    """Add an executor for `SCHEME` / `SCHEME://...` specs (packages may instead declare it in the
    `nb_mlops.executors` entry-point group: name = scheme, value = the factory).

    Raises:
        ValueError: `scheme` is not a URL scheme (lower case letters, digits, `+`, `.`, `-`).
    """
    if not _SCHEME.match(scheme):
        raise ValueError(f"executor scheme {scheme!r} must be lower case letters, digits, +, ., -")
    with _LOCK:
        _REGISTRY[scheme] = factory


def _scheme(spec: str) -> str:
    return spec.split("://", 1)[0] if "://" in spec else spec


def resolve(spec: str) -> ExecutorFactory:
    """The factory of the executor `spec` names: built in, registered, or a plugin's (loaded from
    its entry point, then registered). Every caller finds executors through this.

    Raises:
        PipelineError: the scheme is neither built in nor a plugin's (the known ones are listed),
            or a `dask://` spec without HOST:PORT.
        PluginError: the plugin declaring the scheme failed to load or is not a factory.
    """
    scheme = _scheme(spec)
    factory = _REGISTRY.get(scheme)
    if factory is None:
        try:
            loaded = plugins.load(plugins.EXECUTORS, scheme)
        except KeyError:
            known = sorted({*_REGISTRY, *plugins.entry_points(plugins.EXECUTORS)})
            raise PipelineError(
                f"unknown executor {spec!r}; use one of: {', '.join(known)} (e.g. dask://HOST:PORT)"
            ) from None
        if not callable(loaded):
            raise PluginError(
                f"plugin {scheme!r} of entry-point group {plugins.EXECUTORS} is a "
                f"{type(loaded).__name__}, not an executor factory"
            )
        register(scheme, loaded)
        factory = loaded
    if scheme == "dask" and not re.match(r"^dask://[^:/]+:\d+\Z", spec):
        raise PipelineError(f"executor {spec!r} is not dask://HOST:PORT")
    return factory


def check_spec(spec: str) -> None:
    """Refuse an unknown executor before anything runs (`resolve`, for its errors)."""
    resolve(spec)


def get_executor(
    spec: str, *, max_parallel: int, env: dict[str, str], cwd: str, log: str | None = None
) -> Executor:
    """The executor for `local`, `dask://HOST:PORT` or a plugin's `SCHEME://...`.

    Raises:
        PipelineError: an unknown scheme (the known ones are listed).
        PluginError: the plugin declaring the scheme failed to load.
    """
    return resolve(spec)(spec, max_parallel=max_parallel, env=env, cwd=cwd, log=log)
