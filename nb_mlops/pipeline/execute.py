# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""Run one step notebook with papermill in a fresh kernel, under a wall-clock watchdog.

Used by every executor (local threads, Dask workers). Success means the step's saver wrote its
completion marker: papermill's cell statuses are not trusted after a kernel death. Whatever
happens, the kernel's whole process group is killed before returning.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb_mlops.pipeline.kernel import DONE_FILE, encode_context

__all__ = [
    "KernelDiedAtStart",
    "StepResult",
    "StepTask",
    "kernel_env",
    "kill_kernel",
    "new_kernel_manager",
    "run_step",
    "start_kernel",
    "stop_kernel",
]

KERNEL_NAME = "python3"
SAVE_EVERY = 2.0  # seconds between saves of a running step's output notebook
ENGINE_NAME = "nb_mlops"
# seconds to wait for a cell's output after the kernel's reply; nbclient's 4 s default drops the
# output, even the traceback, of a cell on a loaded machine (the step notebook would not show it)
OUTPUT_WAIT = 60
# a kernel that dies before answering ran no user code, so it is started again with fresh ports:
# the ports jupyter_client picks are free when picked, but any process's outgoing connection may
# take one before the kernel binds it, and the kernel then exits ("Address already in use")
START_ATTEMPTS = 3
# per-run variables a kernel must not inherit from the process that starts it
_STEP_VARS = ("NB_MLOPS_RUN_ID", "NB_MLOPS_STEP", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME")

_PREPARE_LOCK = threading.Lock()

OnCell = Callable[[str, int, str], None]  # (step, position, description of the cell)


class KernelDiedAtStart(RuntimeError):
    """The kernel process exited before answering its first request (no user code ran)."""


@dataclass
class StepTask:
    """Everything needed to run one step, in a form that pickles (Dask ships it to a worker)."""

    pipeline: str
    step: str
    notebook: str
    output: str
    values_dir: str
    context: dict[str, Any]
    env: dict[str, str]
    cwd: str
    timeout: float | None = None
    cell_timeout: float | None = None
    start_timeout: float = 120.0


@dataclass
class StepResult:
    """How a step ended: SUCCEEDED only when its completion marker exists."""

    step: str
    status: str
    duration: float
    error: str | None = None
    cell: str | None = None
    marker: dict[str, Any] = field(default_factory=dict)


def kernel_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a step kernel: ours without per-run variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _STEP_VARS}
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    env.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    env.update(extra)
    return env


def _pid(km: Any) -> int | None:
    process = getattr(getattr(km, "provisioner", None), "process", None)
    return getattr(process, "pid", None)


# modules every generated step imports (its setup and saver cells): a pre-started kernel loads
# them while it waits, so the step does not pay for them (no name is bound in the namespace)
_PRELOAD = "__import__('nb_mlops.pipeline.kernel'); __import__('blake3'); __import__('cloudpickle')"
# a launched kernel kills its process group when this process dies (a forked one's zygote does)
_GUARD = "__import__('nb_mlops.pipeline.guard').pipeline.guard.watch({pid})"


def _fast_client_class() -> type:
    """A kernel client whose readiness check ends when the kernel has answered on both channels.

    jupyter_client's `wait_for_ready` ends by waiting for 0.2 s of IOPub silence, paid once per
    client, i.e. once per step; instead we wait for the `idle` status of our own
    `kernel_info` request, which proves that IOPub is subscribed and drained up to it.
    """
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_core.utils import ensure_async

    class FastKernelClient(AsyncKernelClient):
        async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
            deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
            sent: set[str] = set()
            while True:
                sent.add(self.kernel_info())
                reply = None
                while reply is None and time.monotonic() < deadline:
                    try:
                        msg = await ensure_async(self.shell_channel.get_msg(timeout=1))
                    except Empty:
                        break
                    if msg.get("parent_header", {}).get("msg_id") in sent:
                        reply = msg
                if reply is not None and await self._await_idle(sent, deadline):
                    self._handle_kernel_info_reply(reply)
                    return
                if not await self._async_is_alive():
                    raise KernelDiedAtStart("Kernel died before replying to kernel_info")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

        async def _await_idle(self, sent: set[str], deadline: float) -> bool:
            # IOPub is PUB/SUB: messages published before the subscription is up are lost, so a
            # short wait, then the caller asks again (a kernel_info costs a millisecond)
            while time.monotonic() < deadline:
                try:
                    msg = await ensure_async(self.iopub_channel.get_msg(timeout=0.02))
                except Empty:
                    return False
                if (
                    msg.get("parent_header", {}).get("msg_id") in sent
                    and msg.get("msg_type") == "status"
                    and msg.get("content", {}).get("execution_state") == "idle"
                ):
                    return True
            return False

        # AsyncKernelClient binds `wait_for_ready` to the base class's function: rebind it
        wait_for_ready = _async_wait_for_ready

    return FastKernelClient


def new_kernel_manager() -> Any:
    """An async kernel manager for the python3 kernel whose clients use the fast readiness check."""
    from jupyter_client import AsyncKernelManager

    km = AsyncKernelManager(kernel_name=KERNEL_NAME)
    km.client_factory = _fast_client_class()
    return km


def start_kernel(
    env: dict[str, str],
    cwd: str,
    timeout: float = 120.0,
    log: str | None = None,
    preload: bool = False,
    zygote: Any = None,
    zygote_wait: float = 0.0,
) -> Any:
    """Start a python3 kernel (its own session and process group) and wait until it answers.

    An async kernel manager, so that nbclient's kernel-death poller keeps running while a cell
    waits for output (a blocking client would wait forever on a dead kernel). The kernel
    process's own stdout/stderr (not the cells' output) go to `log` when given. A launched
    kernel watches this process and kills its own process group when it dies. With `preload`
    (a kernel started ahead of its step) the modules every step imports are loaded, silently.
    With a `zygote` (`nb_mlops.pipeline.zygote.Zygote`) ready within `zygote_wait` seconds, the
    kernel process is forked from it rather than launched. A kernel that dies before it answers
    is started again, up to `START_ATTEMPTS` times in all.
    """
    for attempt in range(1, START_ATTEMPTS):
        try:
            return _start_once(env, cwd, timeout, log, preload, zygote, zygote_wait)
        except KernelDiedAtStart:
            if log:
                with contextlib.suppress(OSError), open(log, "a") as sink:
                    sink.write(f"nb_mlops: the kernel died while starting; start {attempt + 1}\n")
    return _start_once(env, cwd, timeout, log, preload, zygote, zygote_wait)


def _start_once(
    env: dict[str, str],
    cwd: str,
    timeout: float,
    log: str | None,
    preload: bool,
    zygote: Any,
    zygote_wait: float,
) -> Any:
    from jupyter_core.utils import run_sync

    km = new_kernel_manager()
    code = [_GUARD.format(pid=os.getpid())]
    if zygote is not None and zygote.usable(zygote_wait):
        from nb_mlops.pipeline.zygote import use_zygote

        use_zygote(km, zygote, log)
        code = []  # the zygote has imported the modules and watches us
    elif preload:
        code.append(_PRELOAD)

    async def start() -> None:
        # IPython's history in memory, as nbclient does for the kernels it starts: concurrent
        # kernels would otherwise queue on one SQLite file in the profile folder
        args = ["--HistoryManager.hist_file=:memory:"]
        if log:
            with open(log, "ab") as sink:  # the child keeps its own copy of the descriptor
                await km.start_kernel(
                    env=env, cwd=cwd, stdout=sink, stderr=sink, extra_arguments=args
                )
        else:
            await km.start_kernel(env=env, cwd=cwd, extra_arguments=args)
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=timeout)
            if code:
                msg_id = client.execute("; ".join(code), silent=True, store_history=False)
                await client._async_recv_reply(msg_id, timeout=timeout)
        finally:
            client.stop_channels()

    try:
        run_sync(start)()
    except BaseException:
        stop_kernel(km)
        raise
    return km


def kill_kernel(km: Any) -> None:
    """SIGKILL the kernel's process group: the kernel and anything it started."""
    pid = _pid(km)
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def stop_kernel(km: Any) -> None:
    """Shut the kernel down and kill its process group, so nothing it started outlives it."""
    from jupyter_core.utils import run_sync

    kill_kernel(km)
    # reaps the process, removes the connection file; a half-started kernel may refuse
    with contextlib.suppress(Exception):
        run_sync(km.shutdown_kernel)(now=True)


def _register_engine() -> None:
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        """papermill's nbclient engine that also reports each cell as it starts, and shows the
        parameter values in the output notebook's `metadata.papermill.parameters`."""

        @classmethod
        def execute_notebook(cls, nb: Any, kernel_name: str, **kwargs: Any) -> Any:
            shown = kwargs.pop("nb_mlops_parameters", None)
            if shown:
                # papermill records what it injected: here only the encoded context, which no one
                # reads; the values themselves go first, as they would for a plain papermill run
                meta = nb.metadata.setdefault("papermill", {})
                meta["parameters"] = {**shown, **meta.get("parameters", {})}
            return super().execute_notebook(nb, kernel_name, **kwargs)

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            on_cell = kwargs.pop("nb_mlops_on_cell", None)
            if on_cell is not None:
                original = nb_man.cell_start

                def cell_start(cell: Any, cell_index: Any = None, **kw: Any) -> Any:
                    on_cell(cell, cell_index)
                    return original(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            # papermill rewrites the whole output notebook before and after every cell (JSON
            # validation included): at most every SAVE_EVERY seconds here, and always at the end
            # (papermill's notebook_complete, which also runs after a failure or a kernel death)
            original_save = nb_man.save
            last = {"at": time.monotonic()}

            def save(**kw: Any) -> Any:
                now = time.monotonic()
                if now - last["at"] >= SAVE_EVERY:
                    last["at"] = now
                    return original_save(**kw)
                return None

            nb_man.save = save
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            finally:
                nb_man.save = original_save

    papermill_engines.register(ENGINE_NAME, ProgressEngine)


def describe_cell(cell: Any) -> str:
    """How a failure names a step notebook cell: by its place in the source notebook if it has one."""
    meta = cell.get("metadata", {})
    source_cell = meta.get("nb_mlops", {}).get("source_cell")
    tags = meta.get("tags", [])
    if source_cell:
        return f"cell #{source_cell} of the notebook"
    for tag, text in (
        ("nb_mlops-saver", "the saver cell (saving the step's values)"),
        ("nb_mlops-loader", "the loader cell (loading upstream values)"),
        ("nb_mlops-setup", "the setup cell"),
        ("injected-parameters", "the injected parameters cell"),
        ("parameters", "the parameters cell"),
    ):
        if tag in tags:
            return text
    return "a generated cell"


def _one_line(name: str, text: str) -> str:
    first = (text or "").strip().splitlines()
    return f"{name}: {first[0]}" if first else name


def prepare() -> None:
    """Import papermill and jupyter_client and register our engine, once, on the calling thread
    (first imports racing in several step threads see half-initialised modules)."""
    with _PREPARE_LOCK:
        import jupyter_client  # noqa: F401
        import papermill  # noqa: F401
        from papermill.engines import papermill_engines

        if ENGINE_NAME not in papermill_engines._engines:
            _register_engine()


class _Watch:
    """A running step's kernel and current cell, and the watchdog that kills the kernel's process
    group when the step outlives its timeout."""

    def __init__(self, km: Any, timeout: float | None) -> None:
        self.km = km
        self.cell: Any = None
        self.fired = threading.Event()
        self.timer = threading.Timer(timeout, self.kill) if timeout else None
        if self.timer is not None:
            self.timer.daemon = True
            self.timer.start()

    def kill(self) -> None:
        self.fired.set()
        running = self.km
        pid = _pid(running) if running is not None else None
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def _execute(task: StepTask, km: Any, on_cell: Callable[[Any, Any], None]) -> None:
    import papermill

    papermill.execute_notebook(
        task.notebook,
        task.output,
        parameters={"nb_mlops_context": encode_context(task.context)},
        engine_name=ENGINE_NAME,
        kernel_name=KERNEL_NAME,
        km=km,
        nb_mlops_on_cell=on_cell,
        nb_mlops_parameters=task.context.get("params"),
        progress_bar=False,
        execution_timeout=task.cell_timeout,
        start_timeout=task.start_timeout,
        iopub_timeout=OUTPUT_WAIT,
    )


def _release(km: Any, reap: Callable[[Any], None] | None) -> None:
    if reap is not None:
        kill_kernel(km)
        reap(km)
    else:
        stop_kernel(km)


def _result(task: StepTask, watch: _Watch, error: str | None, duration: float) -> StepResult:
    """SUCCEEDED only when the saver wrote the completion marker."""
    where = describe_cell(watch.cell) if watch.cell is not None else "kernel start"
    if watch.fired.is_set():
        error = f"killed by the watchdog after {task.timeout:g} s (hung or too slow)"
    marker_path = Path(task.values_dir) / DONE_FILE
    if error is None and marker_path.is_file():
        marker = json.loads(marker_path.read_text())
        return StepResult(task.step, "SUCCEEDED", duration, marker=marker)
    if error is None:
        error = "the step stopped before its last cell (sys.exit() or os._exit() here, or a crash)"
    message = f"step {task.step!r} failed in {where}: {error}"
    return StepResult(task.step, "FAILED", duration, error=message, cell=where)


def run_step(
    task: StepTask,
    km: Any = None,
    on_cell: OnCell | None = None,
    log: str | None = None,
    reap: Callable[[Any], None] | None = None,
    zygote: Any = None,
    zygote_wait: float = 0.0,
    on_kernel: Callable[[Any], None] | None = None,
) -> StepResult:
    """Execute one step notebook; never raises for a failing step (the result says FAILED).

    Args:
        task: the step to run.
        km: a started KernelManager to use (a pre-warmed kernel), else a fresh one is started.
        on_cell: called as each cell starts: (step, position, description).
        log: a file for the kernel process's own stdout/stderr (a fresh kernel only).
        reap: given, the kernel's process group is killed before returning and `reap(km)` is
            left to finish the shutdown (reaping, connection file) off the critical path; it
            must call `stop_kernel(km)` before the run ends.
        zygote: a `Zygote` ready within `zygote_wait` seconds forks the fresh kernel, when one
            is needed.
        on_kernel: called with the kernel manager as soon as the step has its kernel (an
            executor that must stop at once kills it).
    """
    import papermill

    prepare()
    started = time.monotonic()
    (Path(task.values_dir) / DONE_FILE).unlink(missing_ok=True)
    watch = _Watch(km, task.timeout)

    def cell_started(cell: Any, index: Any) -> None:
        watch.cell = cell
        if on_cell is not None:
            on_cell(task.step, int(index or 0), describe_cell(cell))

    error: str | None = None
    try:
        if km is None:
            env = kernel_env(task.env)
            km = watch.km = start_kernel(
                env, task.cwd, task.start_timeout, log=log, zygote=zygote, zygote_wait=zygote_wait
            )
        if on_kernel is not None:
            on_kernel(km)
        _execute(task, km, cell_started)
    except papermill.PapermillExecutionError as exc:
        error = _one_line(exc.ename, exc.evalue)
    except Exception as exc:  # a dead kernel, a cell timeout, a kernel that never answered
        error = _one_line(type(exc).__name__, str(exc))
    finally:
        watch.cancel()
        if km is not None:
            _release(km, reap)
    return _result(task, watch, error, time.monotonic() - started)
