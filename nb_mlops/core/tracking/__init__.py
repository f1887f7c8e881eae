"""Tracked runs: `track()` (behind `%%track`), `log()`, `flush()`, and what a run captures.

A run is created synchronously (a direct insert on the embedded store, so autolog can write to it at
once); everything else — params, metrics, tags, artifacts, dataset inputs, the model — goes through
the background writer (`nb_mlops.core.writer`). When a block ends, its params, metrics, tags and
status are committed before `track()` returns, and a failure to save them is raised there; slower
work (the model, artifacts) may still be running, and the run shows it (`nb_mlops.pending`) until it
is done. `track()` waits for the previous run to be persisted before it starts the next one; process
exit and `nb_mlops.flush()` wait for everything (`nb_mlops.core.durable`).

The package has one module per concern: `context` (the kernel, the notebook, the experiment),
`stores` (store selection and mlflow's import), `warmup`, `logs` (`log()`), `runs` (`track()`) and
`background` (what a run captures on the writer thread).
"""

from __future__ import annotations

from nb_mlops.core.tracking.context import (
    USER_PARAMS_TAG as USER_PARAMS_TAG,
)
from nb_mlops.core.tracking.context import (
    Run,
    active_run_id,
    bind_kernel,
    current_experiment_name,
    hidden_state_warnings,
    last_run_id,
    notebook_path,
    set_experiment,
)
from nb_mlops.core.tracking.context import (
    _proc as _proc,
)
from nb_mlops.core.tracking.logs import log
from nb_mlops.core.tracking.logs import note_step_input as note_step_input
from nb_mlops.core.tracking.runs import track
from nb_mlops.core.tracking.stores import _mlflow_ready as _mlflow_ready
from nb_mlops.core.tracking.stores import _store_for as _store_for
from nb_mlops.core.tracking.stores import await_warm_up_finished as await_warm_up_finished
from nb_mlops.core.tracking.stores import flush
from nb_mlops.core.tracking.warmup import warm_up, warm_up_async

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
