"""Tracked runs: `track()` (behind `%%track`), `log()`, `flush()`, and what a run captures.

A run is created synchronously (a direct insert on the embedded store, so autolog can write to it at
once); everything else — params, metrics, tags, artifacts, dataset inputs, the model — goes through
the background writer (`nb_mlops.core.writer`). When a block ends, its params, metrics, tags and
status are committed before `track()` returns, and a failure to save them is raised there; slower
work (the model, artifacts) may still be running, and the run shows it (`nb_mlops.pending`) until it
is done. `track()` waits for the previous run to be persisted before it starts the next one; process
exit and `nb_mlops.flush()` wait for everything (`nb_mlops.core.durable`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb_mlops.core import durable, session
from nb_mlops.core.capture import autolog as autolog_capture
from nb_mlops.core.capture import models as capture_models
from nb_mlops.core.capture import notebook as nbcap
from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import NoActiveRun, StillPending, StoreError, TrackingError
from nb_mlops.core.files import write_atomic
from nb_mlops.core.store import (
    client,
    embedded_experiment,
    ensure_store,
    environment_kept,
    experiment_id,
    install_sqlite_pragmas,
)
from nb_mlops.core.user import current_user
from nb_mlops.core.writer import (
    ClientBackend,
    SqliteBackend,
    Writer,
    owner_token,
    raise_unavailable,
)

__all__ = [
    "Run",
    "active_run_id",
    "bind_kernel",
    "current_experiment_name",
    "flush",
    "hidden_state_warnings",
    "last_run_id",
    "log",
    "notebook_path",
    "set_experiment",
    "track",
    "warm_up",
    "warm_up_async",
]

USER_PARAMS_TAG = "nb_mlops.params"
_NO_RUN = (
    "nb_mlops.log() has no run to log to: put %%track on the first line of the cell "
    "(or use `with nb_mlops.track():`)"
)


@dataclass
class _Store:
    """One tracking store as this process uses it: config, writer, experiment cache."""

    cfg: Config
    writer: Writer
    sqlite: SqliteBackend | None
    experiments: dict[str, tuple[str, str]] = field(default_factory=dict)

    def experiment(self, name: str) -> tuple[str, str]:
        """(experiment_id, artifact_location), creating the experiment if needed."""
        hit = self.experiments.get(name)
        if hit is None and self.sqlite is not None:
            # plain SQL, as MLflow would write it: the first run never waits for `import mlflow`
            hit = embedded_experiment(self.cfg, name)
        if hit is None:
            _await_warm_up()
            exp_id = experiment_id(self.cfg, name)
            hit = self.sqlite.experiment(name) if self.sqlite is not None else None
            hit = hit or (exp_id, "")
        self.experiments[name] = hit
        return hit


@dataclass
class Run:
    """A tracked run (what `track()` yields).

    Attributes:
        run_id: the MLflow run id.
        experiment_id: its experiment.
        name: the run name.
        parent_run_id: the run it is nested under, or None.
        status: RUNNING, then FINISHED, FAILED or KILLED.
    """

    run_id: str
    experiment_id: str
    name: str
    artifact_uri: str
    parent_run_id: str | None = None
    status: str = "RUNNING"
    _store: _Store | None = field(default=None, repr=False)
    _steps: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def pending(self) -> list[str]:
        """What is still being saved for this run after its block ended (e.g. `["model"]`);
        [] once it is completely stored. The run reads RUNNING, tag `nb_mlops.pending`, until
        then."""
        return [] if self._store is None else self._store.writer.pending_work(self.run_id)

    def log(self, step: int | None = None, **metrics: float) -> None:
        """Log metrics to this run (see `nb_mlops.log`)."""
        _log_to(self, step, metrics)

    def set_tag(self, key: str, value: object) -> None:
        assert self._store is not None
        self._store.writer.tag(self.run_id, key, str(value))

    def log_params(self, params: dict[str, Any]) -> None:
        assert self._store is not None
        for key, value in params.items():
            self._store.writer.param(self.run_id, key, nbcap.format_param(value))


class _Process:
    """State of this process (one kernel session)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.stores: dict[tuple[str, str], _Store] = {}
        self.stack: list[Run] = []
        self.env_runs: dict[str, Run] = {}
        self.last_run_id: str | None = None
        self.experiment_override: str | None = None
        self.namespace: dict[str, Any] | None = None
        self.history: Callable[[], list[str]] | None = None
        self.mlflow_uris: tuple[str, str] | None = None
        self.autolog_ready = False
        self.autolog_lock = threading.Lock()
        self.warm_up_error: BaseException | None = None
        self.warm_thread: threading.Thread | None = None
        self.mlflow_imported = threading.Event()
        self.probed: set[str] = set()


_proc = _Process()


def _forget_after_fork() -> None:
    """A forked child has none of its parent's writer threads: it opens its own stores and owns
    no run of its parent's (their ends are the parent's to write)."""
    _proc.lock = threading.RLock()
    _proc.stores.clear()
    _proc.stack.clear()
    _proc.env_runs.clear()
    _proc.warm_thread = None


os.register_at_fork(after_in_child=_forget_after_fork)


# --- context -----------------------------------------------------------------------------------


def bind_kernel(
    namespace: dict[str, Any] | None, history: Callable[[], list[str]] | None = None
) -> None:
    """Tell tracking where the kernel's user namespace and input history are (the magics do it).

    Args:
        namespace: the user namespace (parameters, papermill's injected paths, estimators).
        history: returns the raw inputs of the session, `In[0] == ''`, the current cell last.
    """
    _proc.namespace = namespace
    _proc.history = history


def _namespace() -> dict[str, Any]:
    if _proc.namespace is not None:
        return _proc.namespace
    main = sys.modules.get("__main__")
    return vars(main) if main is not None else {}


def set_experiment(name: str | None) -> None:
    """Use experiment `name` for this session's next runs (`%mlops experiment NAME`); None resets."""
    if name is not None and not name.strip():
        raise TrackingError("experiment name is empty: give a name, e.g. `churn-model`")
    _proc.experiment_override = name.strip() if name else None


def notebook_path() -> Path | None:
    """The notebook this kernel runs: the pipeline's source notebook (`NB_MLOPS_NOTEBOOK`),
    papermill's `PAPERMILL_INPUT_PATH` (`--inject-paths`), JupyterLab's session path
    (`JPY_SESSION_NAME` / `__session__`), or None."""
    ns = _namespace()
    for value in (
        os.environ.get("NB_MLOPS_NOTEBOOK"),
        ns.get("PAPERMILL_INPUT_PATH"),
        os.environ.get("JPY_SESSION_NAME"),
        ns.get("__session__"),
    ):
        if isinstance(value, str) and value.endswith(".ipynb"):
            path = Path(value)
            return path if path.is_absolute() else (Path.cwd() / path).resolve()
    return None


def _analysis_notebook() -> Path | None:
    """The file whose cells match what the kernel ran: papermill's output notebook (it holds the
    injected-parameters cell) when there is one, else the notebook itself."""
    out = _namespace().get("PAPERMILL_OUTPUT_PATH")
    if isinstance(out, str) and out.endswith(".ipynb") and not os.environ.get("NB_MLOPS_NOTEBOOK"):
        path = Path(out)
        if path.exists():
            return path
    return notebook_path()


def current_experiment_name(cfg: Config | None = None) -> str:
    """The experiment new runs go to: the configured `experiment`, else `%mlops experiment`,
    else `NB_MLOPS_EXPERIMENT`, else the notebook's file stem, else the root folder's name."""
    cfg = cfg or load_config()
    nb = notebook_path()
    return (
        cfg.experiment
        or _proc.experiment_override
        or os.environ.get("NB_MLOPS_EXPERIMENT")
        or (nb.stem if nb else None)
        or cfg.root.name
        or "Default"
    )


def last_run_id() -> str | None:
    """The id of the last run this session started (finished or not)."""
    return _proc.last_run_id


def active_run_id() -> str | None:
    """The run `log()` writes to now: the innermost tracked run, else a pipeline step's run."""
    if _proc.stack:
        return _proc.stack[-1].run_id
    return os.environ.get("NB_MLOPS_RUN_ID") or None


def hidden_state_warnings() -> list[str]:
    """Hidden-state warnings for the current cell against the saved notebook ([] when unknown)."""
    path = _analysis_notebook()
    nb = nbcap.read_notebook(path) if path else None
    if nb is None or _proc.history is None:
        return []
    history = list(_proc.history())
    current = history[-1] if history else ""
    return list(nbcap.hidden_state(nb, history, current)["warnings"])


# --- stores and writers ------------------------------------------------------------------------


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
        sqlite = None
        if cfg.is_embedded and SqliteBackend.compatible(cfg.db_path):
            sqlite = SqliteBackend(cfg.db_path)
            sqlite.kill_orphans()  # runs of kernels that died without ending them
        backend = sqlite if sqlite is not None else ClientBackend(client(cfg))
        found = _Store(cfg=cfg, writer=Writer(backend, _retry_seconds(cfg)), sqlite=sqlite)
        _proc.stores[key] = found
        durable.register("tracking", _wait)  # nb_mlops.flush() and process exit wait for it
    return found


def _wait(timeout: float | None, report: bool = True) -> int:
    """Wait for every writer of this process; return how many items are still queued."""
    deadline = None if timeout is None else time.monotonic() + timeout
    left = 0
    for st in list(_proc.stores.values()):
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        left += st.writer.flush(remaining, report=report)
    return left


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


def _mlflow_loaded() -> bool:
    """mlflow is fully imported (by the warm-up, or by the user with no warm-up running)."""
    return _proc.mlflow_imported.is_set() or ("mlflow" in sys.modules and not _warming())


def _mlflow_ready(cfg: Config) -> Any:
    """Import mlflow and point its fluent API (used by autolog) at our store."""
    _await_warm_up()
    import mlflow

    _proc.mlflow_imported.set()
    uris = (cfg.tracking_uri, cfg.registry_uri)
    if _proc.mlflow_uris != uris:
        ensure_store(cfg)
        install_sqlite_pragmas()  # before MLflow opens an engine
        with environment_kept():
            mlflow.set_tracking_uri(cfg.tracking_uri)
            mlflow.set_registry_uri(cfg.registry_uri)
        _proc.mlflow_uris = uris
    return mlflow


def _autolog_integration() -> dict[str, Any]:
    from mlflow.utils.autologging_utils import AUTOLOGGING_INTEGRATIONS

    config: dict[str, Any] = AUTOLOGGING_INTEGRATIONS.setdefault("sklearn", {})
    return config


def _owner_writer(run_id: str) -> Writer | None:
    """The writer of `run_id` when it is a run tracked now by this process."""
    for run in reversed(_proc.stack):
        if run.run_id == run_id and run._store is not None:
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


# --- warm-up -----------------------------------------------------------------------------------


def warm_up() -> None:
    """Do now what the first tracked cell would otherwise wait for: the store, mlflow, the
    environment listing, the experiment and sklearn autolog. Errors are kept for `track()`.

    The calling thread becomes the warm-up thread that mlflow users wait for (see
    `_await_warm_up`) unless another one already is."""
    with _proc.lock:
        if _proc.warm_thread is None:
            _proc.warm_thread = threading.current_thread()
        elif _proc.warm_thread is not threading.current_thread():
            return
    try:
        from importlib.util import find_spec

        from nb_mlops.core.capture.environment import environment

        cfg = load_config()
        st = _store_for(cfg)
        st.experiment(current_experiment_name(cfg))  # plain SQL on the embedded store: fast
        environment()
        _mlflow_ready(cfg)
        client(cfg)
        if find_spec("sklearn") is not None:
            _setup_autolog(cfg)
            # the first autologged fit resolves MLflow's run-context tags (git, notebook, …):
            # GitPython's import alone takes ~0.5 s, so do it here rather than in that cell
            from mlflow.tracking.context import registry

            registry.resolve_tags()
    except BaseException as exc:  # noqa: BLE001 - surfaced by the next track()
        _proc.warm_up_error = exc


def warm_up_async() -> threading.Thread:
    """Start `warm_up()` in a daemon thread (once per process)."""
    with _proc.lock:
        if _proc.warm_thread is None:
            _proc.warm_thread = threading.Thread(
                target=warm_up, name="nb_mlops-warm-up", daemon=True
            )
            _proc.warm_thread.start()
        return _proc.warm_thread


# --- logging -----------------------------------------------------------------------------------


def _env_run() -> Run | None:
    """A pipeline step's run (created and ended by the runner), from `NB_MLOPS_RUN_ID`."""
    run_id = os.environ.get("NB_MLOPS_RUN_ID")
    if not run_id:
        return None
    found = _proc.env_runs.get(run_id)
    if found is None:
        st = _store_for(load_config())
        found = Run(run_id=run_id, experiment_id="", name="", artifact_uri="", _store=st)
        _proc.env_runs[run_id] = found
    return found


def note_step_input(use: session.DataUse) -> None:
    """Record a data version a pipeline step used on the step's own run (`NB_MLOPS_RUN_ID`): the
    runner copies its `nb_mlops.data.*` tag onto the pipeline run, where promotion verifies it."""
    run = _env_run()
    if run is not None:
        _note_input(run, use)


def log(step: int | None = None, **metrics: float) -> None:
    """Log metrics to the active tracked run (or a pipeline step's run).

    A metric logged without `step` gets the next step of that metric (0, 1, 2, …), so a loop of
    `log(loss=...)` draws a curve. Values are queued and persisted in the background; `flush()`
    (and every run's end) waits for them.

    Example:
        >>> with nb_mlops.track():                    # doctest: +SKIP
        ...     for epoch in range(3):
        ...         nb_mlops.log(loss=1 / (epoch + 1))

    Raises:
        NoActiveRun: no tracked cell and no pipeline step is running.
        TrackingError: a value is not a number.
    """
    run = _proc.stack[-1] if _proc.stack else _env_run()
    if run is None:
        raise NoActiveRun(_NO_RUN)
    _log_to(run, step, metrics)


def _log_to(run: Run, step: int | None, metrics: dict[str, float]) -> None:
    assert run._store is not None
    put = run._store.writer.metric
    ts = int(time.time() * 1000)
    steps = run._steps
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TrackingError(
                f"metric {key!r} must be a number, got {value!r}; log text as a tag instead"
            ) from None
        if step is None:
            s = steps.get(key, 0)
            steps[key] = s + 1
        else:
            s = int(step)
        put(run.run_id, key, number, ts, s)


# --- runs --------------------------------------------------------------------------------------


@contextlib.contextmanager
def track(
    name: str | None = None,
    autolog: bool = True,
    tags: dict[str, str] | None = None,
    nested: bool | None = None,
    *,
    cell: str | None = None,
) -> Iterator[Run]:
    """Run the body inside a tracked MLflow run (what `%%track` does).

    Inside a tracked run (or a pipeline step) the new run is nested under it unless
    `nested=False`. The body raising marks the run FAILED (traceback kept as an artifact),
    KeyboardInterrupt marks it KILLED; the exception propagates unchanged.

    Args:
        name: run name (MLflow picks one when None).
        autolog: sklearn autolog (params, training metrics) and the fitted model.
        tags: extra run tags.
        nested: force (True) or forbid (False) nesting under the active run.
        cell: the source of the cell being tracked (the magic passes it).

    Example:
        >>> with nb_mlops.track(name="baseline", tags={"team": "churn"}) as run:   # doctest: +SKIP
        ...     nb_mlops.log(accuracy=0.93)
        >>> run.status                                                               # doctest: +SKIP
        'FINISHED'

    Raises:
        StoreError: the store cannot be reached, or the previous run could not be saved.
    """
    run, finisher = _start(name, autolog, dict(tags or {}), nested, cell)
    try:
        yield run
    except KeyboardInterrupt as exc:
        finisher("KILLED", exc)
        raise
    except BaseException as exc:
        finisher("FAILED", exc)
        raise
    finisher("FINISHED", None)


def _start(
    name: str | None,
    autolog: bool,
    user_tags: dict[str, str],
    nested: bool | None,
    cell: str | None,
) -> tuple[Run, Callable[[str, BaseException | None], None]]:
    if _proc.warm_up_error is not None:
        error, _proc.warm_up_error = _proc.warm_up_error, None
        if isinstance(error, StoreError):
            raise error
    cfg = load_config()
    st = _store_for(cfg)
    st.writer.flush()  # the previous run is persisted before this one starts
    parent: str | None = None
    if nested is not False:
        parent = _proc.stack[-1].run_id if _proc.stack else os.environ.get("NB_MLOPS_RUN_ID")
        if nested and not parent:
            raise TrackingError("nested=True needs an active tracked run or pipeline step")
    exp_name = current_experiment_name(cfg)
    top = _proc.stack[-1] if _proc.stack else None
    if top is not None and parent == top.run_id:
        # nested: same experiment as the parent, whose artifact_uri is <location>/<id>/artifacts
        exp_id = top.experiment_id
        artifact_location = top.artifact_uri.rsplit("/", 2)[0]
    else:
        exp_id, artifact_location = st.experiment(exp_name)

    nb_path = notebook_path()
    nb = nbcap.read_notebook(nb_path) if nb_path else None
    analysis_path = _analysis_notebook()
    analysis = nbcap.read_notebook(analysis_path) if analysis_path else None
    namespace = _namespace()
    history = list(_proc.history()) if _proc.history is not None else []
    if cell is None and history:
        cell = history[-1]

    start_ms = int(time.time() * 1000)
    run_name = name or f"{exp_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = _base_tags(nb_path, nb, parent)
    tags["mlflow.runName"] = run_name
    tags.update({k: str(v) for k, v in user_tags.items()})
    if st.sqlite is not None:
        run_id = uuid.uuid4().hex
        st.sqlite.create_run(run_id, exp_id, artifact_location, run_name, start_ms, tags)
        artifact_uri = f"{artifact_location.rstrip('/')}/{run_id}/artifacts"
    else:
        created = client(cfg).create_run(exp_id, start_time=start_ms, tags=tags, run_name=run_name)
        run_id, artifact_uri = created.info.run_id, created.info.artifact_uri
    run = Run(run_id, exp_id, run_name, artifact_uri, parent, _store=st)
    _proc.stack.append(run)
    _proc.last_run_id = run_id
    st.writer.bind(run_id)  # background work queued from here on belongs to this run

    source_nb = analysis or nb
    params = nbcap.parameter_values(source_nb, namespace) if source_nb is not None else {}
    run.log_params(params)
    if params:  # the user's own parameters, told apart from those autolog adds
        run.set_tag(USER_PARAMS_TAG, json.dumps(list(params)))
    # autolog patches sklearn: needed when sklearn is loaded, or the cell is about to load it
    sklearn_on = autolog and ("sklearn" in sys.modules or "sklearn" in (cell or ""))
    fluent = _push_fluent(cfg, run, start_ms, need=sklearn_on or "mlflow" in (cell or ""))
    if sklearn_on:
        _setup_autolog(cfg)
        _autolog_integration()["disable"] = False
    models = capture_models.Watch(namespace) if autolog else None
    st.writer.call(
        lambda: _capture(cfg, run, nb, analysis, history, cell or ""),
        f"capture of run {run_id}",
        result=False,
    )
    for use in session.data_used():
        _note_input(run, use)

    def on_data(use: session.DataUse) -> None:
        _note_input(run, use)

    session.add_listener(on_data)

    def finish(status: str, exc: BaseException | None) -> None:
        try:
            session.remove_listener(on_data)
            if sklearn_on:
                _autolog_integration()["disable"] = True
            if models is not None:
                models.finish(cfg, st.writer, run_id, lambda: _as_active(cfg, run))
            if exc is not None:
                _note_error(run, exc)
        finally:
            _pop_fluent(fluent)
            if run in _proc.stack:
                _proc.stack.remove(run)
            run.status = status
            _end(st, run, status, exc)

    return run, finish


def _end(st: _Store, run: Run, status: str, exc: BaseException | None) -> None:
    """Commit the run's values and status now; raise what could not be saved — or, when the
    block raised, add it to that exception as a note (the user's error stays the one raised)."""
    st.writer.unbind(run.run_id)
    try:
        st.writer.finish_run(run.run_id, status, int(time.time() * 1000))
    except StoreError as failure:
        run.status = "FAILED"
        if exc is None:
            raise
        exc.add_note(f"nb_mlops: {failure}")


def _base_tags(
    nb_path: Path | None, nb: nbcap.NotebookFile | None, parent: str | None
) -> dict[str, str]:
    source = str(nb_path) if nb_path else (sys.argv[0] if sys.argv and sys.argv[0] else "")
    tags = {
        "mlflow.source.type": "NOTEBOOK",
        "mlflow.source.name": source,
        "mlflow.user": current_user(),
        "nb_mlops.mode": os.environ.get("NB_MLOPS_MODE") or "interactive",
        "nb_mlops.owner": owner_token(),
    }
    if nb is not None:
        tags["nb_mlops.notebook_sha256"] = nb.sha256
    if parent:
        tags["mlflow.parentRunId"] = parent
    for env_name, tag in (
        ("NB_MLOPS_PIPELINE", "nb_mlops.pipeline"),
        ("NB_MLOPS_STEP", "nb_mlops.step"),
    ):
        if os.environ.get(env_name):
            tags[tag] = os.environ[env_name]
    return tags


def _push_fluent(cfg: Config, run: Run, start_ms: int, need: bool) -> Any:
    """Make `run` MLflow's active fluent run in this thread (autolog and `mlflow.log_*` write to
    it) without a store round trip. Skipped while mlflow is not (yet) imported and not needed:
    a cell that neither autologs nor mentions mlflow never waits for the warm-up's import."""
    if not need and not _mlflow_loaded():
        return None
    _mlflow_ready(cfg)
    from mlflow.entities import Run as MlflowRun
    from mlflow.entities import RunData, RunInfo
    from mlflow.tracking.fluent import ActiveRun, _active_run_stack

    info = RunInfo(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        user_id=current_user(),
        status="RUNNING",
        start_time=start_ms,
        end_time=None,
        lifecycle_stage="active",
        artifact_uri=run.artifact_uri,
        run_name=run.name,
    )
    active = ActiveRun(MlflowRun(info, RunData()))  # type: ignore[no-untyped-call]
    _active_run_stack.get().append(active)  # type: ignore[no-untyped-call]
    return active


def _pop_fluent(active: Any) -> None:
    if active is None:
        return
    from mlflow.tracking.fluent import _active_run_stack

    stack = _active_run_stack.get()  # type: ignore[no-untyped-call]
    # runs the cell started with mlflow.start_run() and left open are dropped with ours
    while active in stack:
        stack.pop()


def _note_error(run: Run, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    first = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    run.set_tag("nb_mlops.error", first[:500])
    data = text.encode()
    assert run._store is not None
    run._store.writer.call(
        lambda: _put_artifact(run, "error/traceback.txt", data),
        f"traceback of run {run.run_id}",
        result=False,
    )


def _note_input(run: Run, use: session.DataUse) -> None:
    run.set_tag(f"nb_mlops.data.{use.name}", use.tag_value)
    assert run._store is not None
    cfg = run._store.cfg
    run._store.writer.call(
        lambda: _log_input(cfg, run, use), f"input {use.name} of {run.run_id}", result=False
    )


# --- background capture (runs on the writer thread) ---------------------------------------------


def _put_artifact(run: Run, relpath: str, data: bytes) -> None:
    """Write one artifact file: straight into the run's folder on a local artifact root, else
    through MLflow's artifact repository."""
    parsed = urllib.parse.urlparse(run.artifact_uri)
    if parsed.scheme in ("file", ""):
        write_atomic(Path(urllib.parse.unquote(parsed.path)) / relpath, data)
        return
    import tempfile

    _await_warm_up()
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / Path(relpath).name
        local.write_bytes(data)
        assert run._store is not None
        parent = str(Path(relpath).parent)
        client(run._store.cfg).log_artifact(
            run.run_id, str(local), None if parent == "." else parent
        )


def _write_tags(run: Run, tags: dict[str, str]) -> None:
    assert run._store is not None
    run._store.writer.backend.write([], [], [(run.run_id, k, v) for k, v in tags.items()])


def _capture(
    cfg: Config,
    run: Run,
    nb: nbcap.NotebookFile | None,
    analysis: nbcap.NotebookFile | None,
    history: list[str],
    cell: str,
) -> None:
    from nb_mlops.core.capture.environment import environment, requirements_text
    from nb_mlops.core.capture.git import git_state

    env = environment()
    tags = {"nb_mlops.python": env["python"], "nb_mlops.env_sha256": env["sha256"]}
    git = git_state(cfg.root)
    if git:
        tags.update(
            {
                "mlflow.source.git.commit": git["commit"],
                "nb_mlops.git.commit": git["commit"],
                "nb_mlops.git.branch": git["branch"],
                "nb_mlops.git.dirty": git["dirty"],
            }
        )
    if nb is not None:
        _put_artifact(run, f"notebook/{nb.path.name}", nb.raw)
    if analysis is not None:
        table = nbcap.cell_table(analysis, history)
        _put_artifact(run, "notebook/cells.json", json.dumps(table, indent=1).encode())
        if history and not os.environ.get("NB_MLOPS_RUN_ID"):
            report = nbcap.hidden_state(analysis, history, cell)
            warnings = report["warnings"]
            tags["nb_mlops.hidden_state"] = (
                "clean" if not warnings else f"{len(warnings)} warning(s): " + " | ".join(warnings)
            )[:8000]
            _put_artifact(run, "notebook/hidden_state.json", json.dumps(report, indent=1).encode())
    _write_tags(run, tags)
    _put_artifact(run, "environment/requirements.txt", requirements_text(env).encode())
    _put_artifact(
        run,
        "environment/python.json",
        json.dumps({k: v for k, v in env.items() if k != "distributions"}, indent=1).encode(),
    )


def _log_input(cfg: Config, run: Run, use: session.DataUse) -> None:
    _await_warm_up()
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=use.name,
        digest=use.digest[:36],
        source_type="nb_mlops",
        source=json.dumps({"uri": use.source or f"nbmlops://{use.name}@v{use.version}"}),
        schema=json.dumps(
            {"mlflow_colspec": [{"name": k, "type": v} for k, v in use.schema.items()]}
        )
        if use.schema
        else None,
        profile=json.dumps({"num_rows": use.rows, **use.profile}, default=str)[:16000]
        if (use.rows is not None or use.profile)
        else None,
    )
    input_tags = [InputTag("mlflow.data.context", use.context)] if use.context else []
    client(cfg).log_inputs(run.run_id, datasets=[DatasetInput(dataset, input_tags)])


@contextlib.contextmanager
def _as_active(cfg: Config, run: Run) -> Iterator[None]:
    """Make `run` MLflow's active run on this (writer) thread: a logged model belongs to the
    active run's experiment. Models are logged by `nb_mlops.core.capture.models`."""
    _mlflow_ready(cfg)
    with _proc.autolog_lock:  # the warm-up may be importing the flavors right now
        import mlflow.sklearn  # noqa: F401
    active = _push_fluent(cfg, run, 0, need=True)
    try:
        yield
    finally:
        _pop_fluent(active)
