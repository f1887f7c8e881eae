"""Store selection: one `_Store` (config, background writer, experiment cache) per tracking URI
and project, opened once per process; and mlflow itself, imported once and pointed at it."""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from nb_mlops.core import durable
from nb_mlops.core.backend import (
    MlflowTrackingBackend,
    SqliteTrackingBackend,
    TrackingBackend,
    open_backend,
)
from nb_mlops.core.capture import autolog as autolog_capture
from nb_mlops.core.config import Config
from nb_mlops.core.errors import StillPending, TrackingError
from nb_mlops.core.outbox import Outbox, OutboxBackend
from nb_mlops.core.store import ensure_store, import_mlflow, install_sqlite_pragmas, point_mlflow_at
from nb_mlops.core.tracking.context import Run, _proc
from nb_mlops.core.user import current_user
from nb_mlops.core.writer import Writer, raise_unavailable


@dataclass
class _Store:
    """One tracking store as this process uses it: config, writer, experiment cache."""

    cfg: Config
    writer: Writer
    backend: TrackingBackend
    experiments: dict[str, tuple[str, str]] = field(default_factory=dict)
    outbox: Outbox | None = None  # on a tracking server: where ended runs wait to be sent

    def experiment(self, name: str) -> tuple[str, str]:
        """(experiment_id, artifact_location), creating the experiment if needed."""
        hit = self.experiments.get(name)
        if hit is None:
            hit = self.experiments[name] = self.backend.experiment(name)
        return hit


def _retry_seconds(cfg: Config) -> float:
    raw = os.environ.get("NB_MLOPS_WRITE_RETRY_SECONDS") or cfg.settings.get("write_retry_seconds")
    try:
        return float(raw) if raw is not None else 120.0
    except ValueError as exc:
        raise TrackingError(f"write_retry_seconds must be a number, got {raw!r}") from exc


def _probe(uri: str) -> None:
    """Fail fast and clearly when a tracking server does not answer."""
    if uri in _proc.probed or not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    timeout = float(os.environ.get("NB_MLOPS_CONNECT_TIMEOUT", "5"))
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - http(s) only
            reply.read(64)
    except urllib.error.HTTPError:
        pass  # it answered: a server without /health is still a server
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise raise_unavailable(uri, reason) from None
    _proc.probed.add(uri)
    # MLflow retries a failing request for minutes by default; keep later failures bounded too.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def _store_for(cfg: Config) -> _Store:
    key = (cfg.tracking_uri, str(cfg.root))
    found = _proc.stores.get(key)
    if found is not None:
        return found
    with _proc.lock:
        found = _proc.stores.get(key)
        if found is not None:
            return found
        _probe(cfg.tracking_uri)
        ensure_store(cfg)
        # mlflow is imported only when the backend first needs it, after a running warm-up did
        backend = open_backend(cfg, before_mlflow=_await_warm_up)
        if isinstance(backend, SqliteTrackingBackend):
            backend.kill_orphans()  # runs of kernels that died without ending them
        outbox = _outbox_for(cfg, backend)
        writes = backend if outbox is None else OutboxBackend(outbox)
        writer = Writer(writes, _retry_seconds(cfg))
        found = _Store(cfg=cfg, writer=writer, backend=backend, outbox=outbox)
        _proc.stores[key] = found
        durable.register("tracking", _wait)  # nb_mlops.flush() and process exit wait for it
    return found


def _outbox_for(cfg: Config, backend: TrackingBackend) -> Outbox | None:
    """A tracking server's outbox in the project (`.nb_mlops/outbox`); opening it queues the
    journals that dead processes left (replay), then the settling of the runs this machine's dead
    processes left RUNNING. None for a local store."""
    if not cfg.tracking_uri.startswith(("http://", "https://")):
        return None
    assert isinstance(backend, MlflowTrackingBackend)
    return Outbox(
        cfg.root / ".nb_mlops" / "outbox",
        cfg.tracking_uri,
        lambda: backend.client,
        settle=lambda busy: backend.kill_orphans(busy),
    )


def _wait(timeout: float | None, report: bool = True) -> int:
    """Wait for every writer of this process, then for its outbox to be acknowledged; return
    how many items are still queued."""
    deadline = None if timeout is None else time.monotonic() + timeout
    left = 0
    for st in list(_proc.stores.values()):
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        left += st.writer.flush(remaining, report=report)
        if st.outbox is not None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            left += st.outbox.wait(remaining, report=report)
    return left


def replay_outbox(cfg: Config, timeout: float | None = None) -> int:
    """Send what dead processes of the project left in the outbox of its tracking server, and
    wait for it (`nb-mlops store check` does; any process that opens the store does it in the
    background). Returns how many entries were found.

    Raises:
        StoreError: the server did not take them (they are kept for a later attempt).
    """
    st = _store_for(cfg)
    if st.outbox is None:
        return 0
    found = st.outbox.adopted
    st.outbox.wait(timeout)
    return found


def flush(timeout: float | None = None) -> None:
    """Block until everything tracked in this process is persisted (`nb_mlops.flush()` waits
    for data snapshots too).

    Raises:
        StoreError: something could not be saved (the message names it).
        StillPending: `timeout` passed first.
    """
    left = _wait(timeout)
    if left:
        raise StillPending(
            f"{left} tracking write(s) still pending after {timeout:g} s; they keep being "
            "written: call flush() again"
        )


def _warming() -> bool:
    thread = _proc.warm_thread
    return thread is not None and thread.is_alive() and thread is not threading.current_thread()


def _await_warm_up() -> None:
    """Wait until a running warm-up has imported mlflow before touching it: importing mlflow from
    two threads at once breaks on its circular imports ("partially initialized module"). The rest
    of the warm-up (environment, autolog) is not waited for."""
    while _warming() and not _proc.mlflow_imported.wait(0.02):
        pass


def await_warm_up_finished() -> None:
    """Wait for the whole warm-up, autolog set-up included, before loading a model: that set-up
    imports scikit-learn's modules, and so does unpickling a model; two threads importing them at
    once can meet a module that scikit-learn's lazy imports are still putting in place (a
    KeyError from `sys.modules`)."""
    thread = _proc.warm_thread
    if thread is not None and thread is not threading.current_thread() and thread.is_alive():
        thread.join()


def _mlflow_loaded() -> bool:
    """mlflow is fully imported (by the warm-up, or by the user with no warm-up running)."""
    return _proc.mlflow_imported.is_set() or ("mlflow" in sys.modules and not _warming())


def _mlflow_ready(cfg: Config) -> Any:
    """Import mlflow and point its fluent API (used by autolog) at our store."""
    _await_warm_up()
    mlflow = import_mlflow()
    _proc.mlflow_imported.set()
    uris = (cfg.tracking_uri, cfg.registry_uri)
    if _proc.mlflow_uris != uris:
        ensure_store(cfg)
        install_sqlite_pragmas()  # before MLflow opens an engine
        point_mlflow_at(cfg.tracking_uri, cfg.registry_uri)
        _proc.mlflow_uris = uris
    return mlflow


def _autolog_integration() -> dict[str, Any]:
    from mlflow.utils.autologging_utils import AUTOLOGGING_INTEGRATIONS

    config: dict[str, Any] = AUTOLOGGING_INTEGRATIONS.setdefault("sklearn", {})
    return config


def _owner_writer(run_id: str) -> Writer | None:
    """The writer of `run_id` when it is a run tracked now by this process."""
    for run in reversed(_proc.stack):
        if run._store is not None and run_id in (run.key, run.known_id):
            return run._store.writer
    return None


def _setup_autolog(cfg: Config) -> None:
    """Patch sklearn once per process, switched off between tracked cells (re-patching costs
    ~150 ms; flipping the integration's `disable` flag costs nothing). Models are logged by us."""
    with _proc.autolog_lock:
        if _proc.autolog_ready:
            return
        _mlflow_ready(cfg)
        import mlflow.sklearn
        import mlflow.sklearn.utils

        # autolog draws ROC / PR / confusion plots for every classifier fit (≈ 1 s) with no switch
        # to turn them off; the metrics stay, the plots go
        mlflow.sklearn.utils._get_classifier_artifacts = lambda *args, **kwargs: []
        # params, tags and the post-fit training metrics go through our background writer
        autolog_capture.install(_owner_writer)
        mlflow.sklearn.autolog(
            log_input_examples=False,
            log_model_signatures=False,
            log_models=False,
            log_datasets=False,
            silent=True,
            disable_for_unsupported_versions=False,
        )
        _autolog_integration()["disable"] = True
        _proc.autolog_ready = True


def _push_fluent(cfg: Config, run: Run, start_ms: int, need: bool) -> Any:
    """Make `run` MLflow's active fluent run in this thread (autolog and `mlflow.log_*`, in the
    cell or in code it calls, write to it) without a store round trip: on a server the run's id
    is read from the outbox when MLflow first asks for it. Skipped while mlflow is not (yet)
    imported and not needed: a cell that neither autologs nor mentions mlflow never waits for
    the warm-up's import (code that imports mlflow later finds no active run)."""
    if not need and not _mlflow_loaded():
        return None
    _mlflow_ready(cfg)
    from mlflow.entities import Run as MlflowRun
    from mlflow.entities import RunData
    from mlflow.tracking.fluent import ActiveRun, _active_run_stack

    info = _lazy_run_info_class()(
        run,
        experiment_id=run.experiment_id,
        user_id=current_user(),
        status="RUNNING",
        start_time=start_ms,
        end_time=None,
        lifecycle_stage="active",
        run_name=run.name,
    )
    active = ActiveRun(MlflowRun(info, RunData()))  # type: ignore[no-untyped-call]
    _active_run_stack.get().append(active)  # type: ignore[no-untyped-call]
    return active


_LAZY_INFO: type | None = None


def _lazy_run_info_class() -> type:
    """MLflow's RunInfo whose id and artifact location come from our `Run` when first read
    (built on first use: mlflow is imported lazily)."""
    global _LAZY_INFO
    if _LAZY_INFO is None:
        from mlflow.entities import RunInfo

        class LazyRunInfo(RunInfo):
            def __init__(self, run: Run, **fields: Any) -> None:
                super().__init__(run_id="", **fields)
                self._nb_mlops_run = run

            @property
            def run_id(self) -> str:
                return self._nb_mlops_run.run_id

            @property
            def artifact_uri(self) -> str:
                run = self._nb_mlops_run
                if not run.artifact_uri:
                    _ = run.run_id  # on a server the location comes with the run's creation
                return run.artifact_uri

        _LAZY_INFO = LazyRunInfo
    return _LAZY_INFO


def _pop_fluent(active: Any) -> None:
    if active is None:
        return
    from mlflow.tracking.fluent import _active_run_stack

    stack = _active_run_stack.get()  # type: ignore[no-untyped-call]
    # runs the cell started with mlflow.start_run() and left open are dropped with ours
    while active in stack:
        stack.pop()


def _end_stray_fluent_runs(run: Run, depth: int) -> None:
    """A block that had no fluent run pushed (mlflow was not loaded when it started) and made
    MLflow calls sent them to a run MLflow started by itself: end that run, and warn naming it,
    rather than leave it RUNNING with its values silently apart from ours."""
    if "mlflow.tracking.fluent" not in sys.modules:
        return
    from mlflow.tracking.fluent import _active_run_stack

    strays = [found.info.run_id for found in _active_run_stack.get()[depth:]]  # type: ignore[no-untyped-call]
    if not strays:
        return
    import mlflow

    for _ in strays:
        mlflow.end_run()
    warnings.warn(
        f"nb_mlops: MLflow calls in tracked run {run.name!r} went to run(s) "
        f"{', '.join(strays)} that MLflow started itself, because mlflow was first imported "
        "inside the block; import mlflow before the block, or log with nb_mlops.log()",
        stacklevel=4,
    )


def fluent_depth() -> int:
    """How many runs MLflow's fluent stack holds in this thread (0 while mlflow is not loaded)."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    stack = getattr(fluent, "_active_run_stack", None)
    return 0 if stack is None else len(stack.get())
