"""The kernel context of tracking: this process's state, the notebook it runs, the experiment new
runs go to, and the `Run` object `track()` yields."""

from __future__ import annotations

import os
import posixpath
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb_mlops.core.capture import notebook as nbcap
from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import TrackingError

if TYPE_CHECKING:
    from nb_mlops.core.outbox import Outbox
    from nb_mlops.core.tracking.stores import _Store

USER_PARAMS_TAG = "nb_mlops.params"
_NO_RUN = (
    "nb_mlops.log() has no run to log to: put %%track on the first line of the cell "
    "(or use `with nb_mlops.track():`)"
)


@dataclass
class Run:
    """A tracked run (what `track()` yields).

    On a tracking server the run is created in the background: `run_id` (and `artifact_uri`)
    wait for the server's answer the first time they are read; logging never does.

    Attributes:
        key: the run's key in this process's queue: its run id, or on a server (until the
            server created it) a local id, its tag `nb_mlops.outbox_id`.
        experiment_id: its experiment.
        name: the run name.
        parent_run_id: the run it is nested under, or None.
        status: RUNNING, then FINISHED, FAILED or KILLED.
    """

    key: str
    experiment_id: str
    name: str
    artifact_uri: str
    parent_run_id: str | None = None
    status: str = "RUNNING"
    _store: _Store | None = field(default=None, repr=False)
    _steps: dict[str, int] = field(default_factory=dict, repr=False)
    _outbox: Outbox | None = field(default=None, repr=False)
    _params: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def run_id(self) -> str:
        """The MLflow run id (on a server: waits until the server created the run)."""
        if self._outbox is None:
            return self.key
        run_id, artifact_uri = self._outbox.resolve(self.key)
        if not self.artifact_uri:
            self.artifact_uri = artifact_uri
        return run_id

    @run_id.setter
    def run_id(self, value: str) -> None:
        self.key, self._outbox = value, None

    @property
    def known_id(self) -> str | None:
        """The run id when known now, without waiting (None: the server has not answered)."""
        if self._outbox is None:
            return self.key
        found = self._outbox.known(self.key)
        return None if found is None else found[0]

    @property
    def pending(self) -> list[str]:
        """What is still being saved for this run after its block ended (e.g. `["model"]`);
        [] once it is completely stored. The run reads RUNNING, tag `nb_mlops.pending`, until
        then."""
        return [] if self._store is None else self._store.writer.pending_work(self.key)

    def log(self, step: int | None = None, **metrics: float) -> None:
        """Log metrics to this run (see `nb_mlops.log`)."""
        _log_to(self, step, metrics)

    def set_tag(self, key: str, value: object) -> None:
        assert self._store is not None
        check_key("tag", key)
        self._store.writer.tag(self.key, key, str(value))

    def log_params(self, params: dict[str, Any]) -> None:
        """Log parameters; a parameter keeps its first value (MLflow refuses to change one).

        Raises:
            TrackingError: a name MLflow does not accept, or a new value for a parameter this
                run already has (nothing of the call is logged then).
        """
        assert self._store is not None
        formatted: dict[str, str] = {}
        for key, value in params.items():
            check_key("parameter", key)
            formatted[key] = text = _param_text(key, value)
            before = self._params.get(key)
            if before is not None and before != text:
                raise TrackingError(
                    f"parameter {key!r} is already {_short(before)} in this run and cannot become "
                    f"{_short(text)} (MLflow keeps a parameter's first value): log it under "
                    "another name, or as a metric"
                )
        for key, text in formatted.items():
            self._params[key] = text
            self._store.writer.param(self.key, key, text)


# what MLflow accepts as a metric, parameter or tag name (its own rule, checked here so that a
# name fails in the cell that logs it, on every store, not at the block's end on a server)
_KEY = re.compile(r"^[/\w.\- :]*\Z")
_KEY_LENGTH = 250
_PARAM_LENGTH = 6000


def check_key(what: str, key: object) -> None:
    """Raise TrackingError if MLflow would refuse `key` as a name."""
    if isinstance(key, str) and key and len(key) <= _KEY_LENGTH and _KEY.match(key):
        normal = posixpath.normpath(key)
        if normal == key and normal != "." and not normal.startswith(("..", "/")):
            return
    raise TrackingError(
        f"{what} name {key!r} is not one MLflow accepts: use letters, digits, spaces and "
        f"_ - . : / (no `..`, no leading or doubled `/`), at most {_KEY_LENGTH} characters"
    )


def _param_text(key: str, value: object) -> str:
    text = nbcap.format_param(value)
    if len(text) > _PARAM_LENGTH:  # MLflow's limit, on every store alike
        warnings.warn(
            f"parameter {key!r} is {len(text):,} characters long; MLflow keeps the first "
            f"{_PARAM_LENGTH:,} (log the whole value as an artifact or a tag)",
            stacklevel=3,
        )
        text = text[:_PARAM_LENGTH]
    return text


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _log_to(run: Run, step: int | None, metrics: dict[str, float]) -> None:
    assert run._store is not None
    put = run._store.writer.metric
    ts = int(time.time() * 1000)
    steps = run._steps
    for key, value in metrics.items():
        check_key("metric", key)
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
        put(run.key, key, number, ts, s)


class _Process:
    """State of this process (one kernel session)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.stores: dict[tuple[str, str], _Store] = {}
        self.stack: list[Run] = []
        self.env_runs: dict[str, Run] = {}
        self.last_run: Run | None = None  # its id may still be on its way from a server
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
    return None if _proc.last_run is None else _proc.last_run.run_id


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
