# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""Run one step notebook with papermill in a fresh kernel, under a wall-clock watchdog.

Used by every executor (local threads, Dask workers). Success means the step's saver wrote its
completion marker: papermill's cell statuses are not trusted after a kernel death (P4). Whatever
happens, the kernel's whole process group is killed before returning (P5).
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

__all__ = ["StepResult", "StepTask", "kernel_env", "run_step", "start_kernel", "stop_kernel"]

KERNEL_NAME = "python3"
ENGINE_NAME = "nb_mlops"
# per-run variables a kernel must not inherit from the process that starts it
_STEP_VARS = ("NB_MLOPS_RUN_ID", "NB_MLOPS_STEP", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME")

_PREPARE_LOCK = threading.Lock()

OnCell = Callable[[str, int, str], None]  # (step, position, description of the cell)


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


def start_kernel(
    env: dict[str, str], cwd: str, timeout: float = 120.0, log: str | None = None
) -> Any:
    """Start a python3 kernel (its own session and process group) and wait until it answers.

    An async kernel manager, so that nbclient's kernel-death poller keeps running while a cell
    waits for output (a blocking client would wait forever on a dead kernel). The kernel
    process's own stdout/stderr (not the cells' output) go to `log` when given.
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_core.utils import run_sync

    km = AsyncKernelManager(kernel_name=KERNEL_NAME)

    async def start() -> None:
        if log:
            with open(log, "ab") as sink:  # the child keeps its own copy of the descriptor
                await km.start_kernel(env=env, cwd=cwd, stdout=sink, stderr=sink)
        else:
            await km.start_kernel(env=env, cwd=cwd)
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=timeout)
        finally:
            client.stop_channels()

    try:
        run_sync(start)()
    except BaseException:
        stop_kernel(km)
        raise
    return km


def stop_kernel(km: Any) -> None:
    """Shut the kernel down and kill its process group, so nothing it started outlives it."""
    from jupyter_core.utils import run_sync

    pid = _pid(km)
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the kernel and anything it started
    # reaps the process, removes the connection file; a half-started kernel may refuse
    with contextlib.suppress(Exception):
        run_sync(km.shutdown_kernel)(now=True)


def _register_engine() -> None:
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        """papermill's nbclient engine that also reports each cell as it starts."""

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            on_cell = kwargs.pop("nb_mlops_on_cell", None)
            if on_cell is not None:
                original = nb_man.cell_start

                def cell_start(cell: Any, cell_index: Any = None, **kw: Any) -> Any:
                    on_cell(cell, cell_index)
                    return original(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

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


def run_step(
    task: StepTask, km: Any = None, on_cell: OnCell | None = None, log: str | None = None
) -> StepResult:
    """Execute one step notebook; never raises for a failing step (the result says FAILED).

    Args:
        task: the step to run.
        km: a started KernelManager to use (a pre-warmed kernel), else a fresh one is started.
        on_cell: called as each cell starts: (step, position, description).
        log: a file for the kernel process's own stdout/stderr (a fresh kernel only).
    """
    import papermill

    prepare()
    started = time.monotonic()
    values = Path(task.values_dir)
    (values / DONE_FILE).unlink(missing_ok=True)
    fired = threading.Event()
    current: dict[str, Any] = {"cell": None, "km": km}

    def kill() -> None:
        fired.set()
        running = current["km"]
        pid = _pid(running) if running is not None else None
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    watchdog = threading.Timer(task.timeout, kill) if task.timeout else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()

    def cell_started(cell: Any, index: Any) -> None:
        current["cell"] = cell
        if on_cell is not None:
            on_cell(task.step, int(index or 0), describe_cell(cell))

    error: str | None = None
    try:
        if km is None:
            km = current["km"] = start_kernel(
                kernel_env(task.env), task.cwd, task.start_timeout, log=log
            )
        papermill.execute_notebook(
            task.notebook,
            task.output,
            parameters={"nb_mlops_context": encode_context(task.context)},
            engine_name=ENGINE_NAME,
            kernel_name=KERNEL_NAME,
            km=km,
            nb_mlops_on_cell=cell_started,
            progress_bar=False,
            execution_timeout=task.cell_timeout,
            start_timeout=task.start_timeout,
        )
    except papermill.PapermillExecutionError as exc:
        error = _one_line(exc.ename, exc.evalue)
    except Exception as exc:  # a dead kernel, a cell timeout, a kernel that never answered
        error = _one_line(type(exc).__name__, str(exc))
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if km is not None:
            stop_kernel(km)
    duration = time.monotonic() - started
    where = describe_cell(current["cell"]) if current["cell"] is not None else "kernel start"
    if fired.is_set():
        error = f"killed by the watchdog after {task.timeout:g} s (hung or too slow)"
    marker_path = values / DONE_FILE
    if error is None and marker_path.is_file():
        marker = json.loads(marker_path.read_text())
        return StepResult(task.step, "SUCCEEDED", duration, marker=marker)
    if error is None:
        error = "the step stopped before its last cell (sys.exit() or os._exit() here, or a crash)"
    message = f"step {task.step!r} failed in {where}: {error}"
    return StepResult(task.step, "FAILED", duration, error=message, cell=where)
