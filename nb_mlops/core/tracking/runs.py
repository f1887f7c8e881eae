"""Runs: `track()` creates a run, captures what it needs, and ends it with its status."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb_mlops.core import session
from nb_mlops.core.capture import models as capture_models
from nb_mlops.core.capture import notebook as nbcap
from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import StoreError, TrackingError
from nb_mlops.core.owners import owner_token
from nb_mlops.core.tracking.background import _as_active, _capture, _note_error, _note_input
from nb_mlops.core.tracking.context import (
    USER_PARAMS_TAG,
    Run,
    _analysis_notebook,
    _namespace,
    _proc,
    current_experiment_name,
    notebook_path,
)
from nb_mlops.core.tracking.stores import (
    _autolog_integration,
    _end_stray_fluent_runs,
    _pop_fluent,
    _push_fluent,
    _setup_autolog,
    _Store,
    _store_for,
    fluent_depth,
)
from nb_mlops.core.user import current_user


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
    _raise_warm_up_error()
    cfg = load_config()
    st = _store_for(cfg)
    if st.outbox is None:
        st.writer.flush()  # the previous run is persisted before this one starts
    # (on a server it is in the outbox already: durable, on its way)
    parent = _parent_run(nested)
    exp_name = current_experiment_name(cfg)
    exp_id, artifact_location = _experiment_of(st, exp_name, parent)

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
    run = _create_run(st, exp_id, artifact_location, run_name, start_ms, tags, parent)
    _proc.stack.append(run)
    _proc.last_run = run
    st.writer.bind(run.key)  # background work queued from here on belongs to this run

    _log_user_params(run, analysis or nb, namespace)
    # autolog patches sklearn: needed when sklearn is loaded, or the cell is about to load it
    sklearn_on = autolog and ("sklearn" in sys.modules or "sklearn" in (cell or ""))
    need = sklearn_on or "mlflow" in (cell or "")
    depth = fluent_depth()
    fluent = _push_fluent(cfg, run, start_ms, need=need)
    if sklearn_on:
        _setup_autolog(cfg)
        _autolog_integration()["disable"] = False
    models = capture_models.Watch(namespace) if autolog else None
    st.writer.call(
        lambda: _capture(cfg, run, nb, analysis, history, cell or ""),
        f"capture of run {run.key}",
        result=False,
    )
    on_data = _listen_for_inputs(run)
    finish = _Finisher(cfg, st, run, on_data, sklearn_on, models, fluent, depth)
    return run, finish


def _raise_warm_up_error() -> None:
    """A store the warm-up could not reach is this run's error too; any other warm-up error is
    met again, where it matters, by the run itself."""
    if _proc.warm_up_error is not None:
        error, _proc.warm_up_error = _proc.warm_up_error, None
        if isinstance(error, StoreError):
            raise error


def _parent_run(nested: bool | None) -> str | None:
    """The run a new run nests under: the innermost tracked run, else a pipeline step's run."""
    if nested is False:
        return None
    parent = _proc.stack[-1].key if _proc.stack else os.environ.get("NB_MLOPS_RUN_ID")
    if nested and not parent:
        raise TrackingError("nested=True needs an active tracked run or pipeline step")
    return parent


def _experiment_of(st: _Store, exp_name: str, parent: str | None) -> tuple[str, str]:
    """(experiment_id, artifact_location) of a new run."""
    top = _proc.stack[-1] if _proc.stack else None
    if top is not None and parent == top.key:
        # nested: same experiment as the parent, whose artifact_uri is <location>/<id>/artifacts
        return top.experiment_id, top.artifact_uri.rsplit("/", 2)[0]
    return st.experiment(exp_name)


def _create_run(
    st: _Store,
    exp_id: str,
    artifact_location: str,
    run_name: str,
    start_ms: int,
    tags: dict[str, str],
    parent: str | None,
) -> Run:
    """Create the run now, in the store (a direct insert on the embedded store); on a server,
    in the background: the run gets a local key now, and its id when the server answers."""
    if st.outbox is not None:
        key = uuid.uuid4().hex
        create = {"experiment_id": exp_id, "name": run_name, "start_ms": start_ms, "tags": tags}
        st.outbox.prepare(key, create)
        return Run(key, exp_id, run_name, "", parent, _store=st, _outbox=st.outbox)
    run_id, artifact_uri = st.backend.create_run(
        exp_id, artifact_location, run_name, start_ms, tags
    )
    return Run(run_id, exp_id, run_name, artifact_uri, parent, _store=st)


def _log_user_params(
    run: Run, source_nb: nbcap.NotebookFile | None, namespace: dict[str, Any]
) -> None:
    params = nbcap.parameter_values(source_nb, namespace) if source_nb is not None else {}
    run.log_params(params)
    if params:  # the user's own parameters, told apart from those autolog adds
        run.set_tag(USER_PARAMS_TAG, json.dumps(list(params)))


def _listen_for_inputs(run: Run) -> Callable[[session.DataUse], None]:
    """Record the data versions used so far, and those used until the run ends, on `run`."""
    for use in session.data_used():
        _note_input(run, use)

    def on_data(use: session.DataUse) -> None:
        _note_input(run, use)

    session.add_listener(on_data)
    return on_data


@dataclass
class _Finisher:
    """Ends a run `_start` began: stops its listeners and autolog, saves its model, its error
    and its status (called with the status and the exception the block raised, if any)."""

    cfg: Config
    st: _Store
    run: Run
    on_data: Callable[[session.DataUse], None]
    sklearn_on: bool
    models: capture_models.Watch | None
    fluent: Any
    fluent_depth: int  # MLflow's fluent runs in this thread when the block started

    def __call__(self, status: str, exc: BaseException | None) -> None:
        run, cfg = self.run, self.cfg
        try:
            session.remove_listener(self.on_data)
            if self.sklearn_on:
                _autolog_integration()["disable"] = True
            if self.models is not None:
                self.models.finish(cfg, self.st.writer, run.key, lambda: _as_active(cfg, run))
            if exc is not None:
                _note_error(run, exc)
        finally:
            if self.fluent is None:
                _end_stray_fluent_runs(run, self.fluent_depth)
            _pop_fluent(self.fluent)
            if run in _proc.stack:
                _proc.stack.remove(run)
            run.status = status
            _end(self.st, run, status, exc)


def _end(st: _Store, run: Run, status: str, exc: BaseException | None) -> None:
    """Commit the run's values and status now; raise what could not be saved — or, when the
    block raised, add it to that exception as a note (the user's error stays the one raised)."""
    st.writer.unbind(run.key)
    try:
        st.writer.finish_run(run.key, status, int(time.time() * 1000))
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
