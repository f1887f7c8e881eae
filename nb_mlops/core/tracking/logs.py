"""Logging metrics: `log()` to the active tracked run, or to a pipeline step's run."""

from __future__ import annotations

import os

from nb_mlops.core import session
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import NoActiveRun
from nb_mlops.core.tracking.background import _note_input
from nb_mlops.core.tracking.context import _NO_RUN, Run, _log_to, _proc
from nb_mlops.core.tracking.stores import _store_for


def _env_run() -> Run | None:
    """A pipeline step's run (created and ended by the runner), from `NB_MLOPS_RUN_ID`."""
    run_id = os.environ.get("NB_MLOPS_RUN_ID")
    if not run_id:
        return None
    found = _proc.env_runs.get(run_id)
    if found is None:
        st = _store_for(load_config())
        found = Run(key=run_id, experiment_id="", name="", artifact_uri="", _store=st)
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
