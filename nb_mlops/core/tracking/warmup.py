"""Warm-up: do before the first tracked cell what it would otherwise wait for."""

from __future__ import annotations

import threading

from nb_mlops.core.config import load_config
from nb_mlops.core.store import client
from nb_mlops.core.tracking.context import _proc, current_experiment_name
from nb_mlops.core.tracking.stores import _mlflow_ready, _setup_autolog, _store_for


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
