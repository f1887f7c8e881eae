"""Steps shipped to Dask workers on other machines, which cannot see the project folder.

What travels with the task: the step notebook's bytes, the project's configuration file, the
tracking and registry URIs, the shared data store's location and the markers of the steps whose
values it reads. The worker runs the step in a temporary folder that stands for the project root
(removed afterwards, so it leaves no `.nb_mlops` behind), fetches the step's inputs from the value
store (`valuestore.py`), saves its values there, and returns the result with the executed notebook;
the driver writes that notebook and the step's values into the run folder, so the run folder, the
step cache and `--resume` work as for a local run. Tracking goes straight from the worker's kernel
to the team server.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import PipelineError
from nb_mlops.core.files import write_atomic
from nb_mlops.pipeline.execute import StepResult, StepTask, run_step
from nb_mlops.pipeline.kernel import DONE_FILE
from nb_mlops.pipeline.valuestore import ValueStore, shared_location

__all__ = ["ShippedResult", "ShippedStep", "Shipper", "plan", "run_shipped"]

PROBE_TIMEOUT = 30.0  # seconds the workers have to say whether they see the project's folder


@dataclass
class ShippedStep:
    """A step task with everything a worker without the project folder needs (pickles)."""

    task: StepTask
    notebook: bytes
    store: str
    settings: dict[str, Any]
    run_id: str
    tracking_uri: str
    registry_uri: str
    config_name: str = "nb_mlops.toml"
    config_text: str = ""
    markers: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ShippedResult:
    """The step's result and its executed notebook (None when papermill wrote none)."""

    result: StepResult
    notebook: bytes | None = None


def _inputs(task: StepTask) -> dict[str, tuple[str, str]]:
    """Input name → (producing step, file) from the task's local input paths."""
    paths: dict[str, str] = task.context.get("inputs") or {}
    return {name: (Path(p).parent.name, Path(p).name) for name, p in paths.items()}


def _local_task(job: ShippedStep, root: Path) -> StepTask:
    """The task as it runs in the worker's temporary project folder `root`."""
    task = job.task
    values = root / "values"
    inputs = {name: str(values / step / file) for name, (step, file) in _inputs(task).items()}
    own = values / task.step
    env = {
        **task.env,
        "NB_MLOPS_ROOT": str(root),
        "NB_MLOPS_TRACKING_URI": job.tracking_uri,
        "NB_MLOPS_REGISTRY_URI": job.registry_uri,
    }
    work = root / "work"
    work.mkdir()
    (root / "step.ipynb").write_bytes(job.notebook)
    return replace(
        task,
        notebook=str(root / "step.ipynb"),
        output=str(root / "output.ipynb"),
        values_dir=str(own),
        context={**task.context, "inputs": inputs, "outputs_dir": str(own)},
        env=env,
        cwd=str(work),
    )


def run_shipped(job: ShippedStep) -> ShippedResult:
    """Run a shipped step on this machine (a Dask worker); never raises for a failing step."""
    with tempfile.TemporaryDirectory(prefix="nb-mlops-step-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        (root / job.config_name).write_text(job.config_text)
        store = ValueStore(job.store, job.settings, job.run_id)
        try:
            task = _local_task(job, root)
            for step, marker in job.markers.items():
                store.get(step, root / "values" / step, marker)
        except Exception as exc:
            error = f"step {job.task.step!r} could not fetch its inputs: {exc}"
            return ShippedResult(StepResult(job.task.step, "FAILED", 0.0, error=error))
        result = run_step(task)
        if result.status == "SUCCEEDED":
            try:
                store.put(task.step, Path(task.values_dir), result.marker)
            except Exception as exc:
                error = f"step {task.step!r} could not store its values: {exc}"
                result = StepResult(task.step, "FAILED", result.duration, error=error)
        output = Path(task.output)
        return ShippedResult(result, output.read_bytes() if output.is_file() else None)


class Shipper:
    """The driver's side: packs tasks for workers and unpacks their results into the run folder."""

    def __init__(self, cfg: Config, store: str, run_id: str) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.store = ValueStore(store, cfg.settings, run_id)
        self.location = store
        self.stored: set[str] = set()  # steps whose values are known to be in the store

    def pack(self, task: StepTask) -> ShippedStep:
        """The task with what travels; the values of its producers are put in the store first
        when they are not there (steps reused from the cache or a resumed run)."""
        markers: dict[str, dict[str, Any]] = {}
        for path in (task.context.get("inputs") or {}).values():
            folder = Path(path).parent
            step = folder.name
            if step in markers:
                continue
            markers[step] = json.loads((folder / DONE_FILE).read_text())
            if step not in self.stored and not self.store.has(step, markers[step]):
                self.store.put(step, folder, markers[step])
            self.stored.add(step)
        source = self.cfg.config_file
        return ShippedStep(
            task=task,
            notebook=Path(task.notebook).read_bytes(),
            store=self.location,
            settings=dict(self.cfg.settings),
            run_id=self.run_id,
            tracking_uri=self.cfg.tracking_uri,
            registry_uri=self.cfg.registry_uri,
            config_name=source.name if source else "nb_mlops.toml",
            config_text=source.read_text() if source else "",
            markers=markers,
        )

    def unpack(self, task: StepTask, shipped: ShippedResult) -> StepResult:
        """Write the executed notebook and (on success) the step's values into the run folder."""
        result = shipped.result
        if shipped.notebook is not None:
            write_atomic(Path(task.output), shipped.notebook)
        if result.status == "SUCCEEDED":
            folder = Path(task.values_dir)
            self.store.get(task.step, folder, result.marker)
            write_atomic(folder / DONE_FILE, json.dumps(result.marker, sort_keys=True).encode())
            self.stored.add(task.step)
        return result


def _sees(path: str, token: str) -> bool:
    """On a worker: whether it reads `token` at `path` (it sees the driver's project folder)."""
    try:
        with open(path) as fh:
            return fh.read() == token
    except OSError:
        return False


def _workers_see(client: Any, folder: Path, address: str) -> bool:
    """Whether every worker of the cluster sees `folder` as this process does.

    Raises:
        PipelineError: the workers did not answer within `PROBE_TIMEOUT` seconds.
    """
    token = uuid.uuid4().hex
    probe = folder / f".dask-probe-{token}"
    probe.write_text(token)
    try:
        # a worker whose event loop is stuck would hold the run forever: bounded
        seen = client.run(
            _sees, str(probe), token, on_error="return", callback_timeout=PROBE_TIMEOUT
        )
    except TimeoutError:
        raise PipelineError(
            f"the Dask workers at {address} did not answer within {PROBE_TIMEOUT:g} s whether "
            "they see this project's folder: check that every worker is running and not busy "
            "(the scheduler's dashboard lists them), then run again"
        ) from None
    finally:
        probe.unlink(missing_ok=True)
    # no worker yet: the tasks wait for workers, as they always did (by path); a worker whose
    # probe failed counts as one that does not see the folder
    return all(answer is True for answer in seen.values())


def plan(client: Any, env: dict[str, str], run_dir: Path, address: str) -> Shipper | None:
    """How this run's steps reach the cluster: shipped (a Shipper) when the project's data store is
    shared and tracking goes to a server; else by path (None) when the workers see the project.

    Raises:
        PipelineError: neither (one line saying what to configure).
    """
    cfg = load_config(env.get("NB_MLOPS_ROOT") or None)
    store = shared_location(cfg.settings, cfg.root)
    if store is not None and not cfg.is_embedded:
        return Shipper(cfg, store, env.get("NB_MLOPS_PARENT_RUN_ID", ""))
    if _workers_see(client, run_dir, address):
        return None
    missing = "data_store" if store is None else "tracking_uri"
    raise PipelineError(
        f"the Dask workers at {address} cannot see this project's folder {cfg.root}, and its "
        f"{missing} is not shared, so step values and runs cannot reach them: set `data_store` to "
        "a shared folder or s3:// URL and `tracking_uri` to the team's MLflow server"
    )
