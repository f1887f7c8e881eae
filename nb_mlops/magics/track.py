# mypy: disable-error-code="untyped-decorator"
# (IPython's magic_arguments decorators carry no types)
"""`%%track`: run a cell inside a tracked MLflow run (a thin face over `nb_mlops.core.tracking`).

Also `start_warm_up(ipython)`, called by `%load_ext nb_mlops`: it moves the heavy work (mlflow,
the store, the environment listing, sklearn autolog) to a background thread so loading stays cheap.
Importing this module loads no mlflow, pandas or papermill.
"""

from __future__ import annotations

import ast
import contextlib
import threading
from typing import Any

from IPython.core import magic_arguments as _margs
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class

# IPython's argument decorators are untyped; seen through `Any` they keep `track` typed
argument: Any = _margs.argument
magic_arguments: Any = _margs.magic_arguments
parse_argstring: Any = _margs.parse_argstring

__all__ = ["TrackMagics", "start_warm_up"]


def _bind(ipython: Any) -> None:
    from nb_mlops.core import tracking

    history = ipython.history_manager.input_hist_raw
    tracking.bind_kernel(ipython.user_ns, lambda: list(history))


_registered = threading.Event()
_go = threading.Event()
# with no cell finishing (the extension loaded from the kernel's config), start anyway after this
_START_LATEST = 2.0


def start_warm_up(ipython: Any) -> None:
    """Bind tracking to this kernel and warm up in the background (returns at once).

    The thread starts its heavy imports only once the `%load_ext` cell has finished (IPython's
    `post_run_cell`), so it does not compete with that cell for the GIL; `%%track` starts it at
    once if it comes first.
    """

    def on_cell_done(*_args: Any) -> None:
        _go.set()
        with contextlib.suppress(ValueError):
            ipython.events.unregister("post_run_cell", on_cell_done)

    events = getattr(ipython, "events", None)
    if events is not None:
        events.register("post_run_cell", on_cell_done)
    else:
        _go.set()

    def work() -> None:
        _go.wait(_START_LATEST)
        try:
            _bind(ipython)
            from nb_mlops.core import tracking

            with tracking._proc.lock:
                if tracking._proc.warm_thread is None:
                    tracking._proc.warm_thread = threading.current_thread()
        finally:
            _registered.set()  # from here on, %%track knows whom to wait for before mlflow
        tracking.warm_up()

    threading.Thread(target=work, name="nb_mlops-warm-up", daemon=True).start()


def _parse_tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-t expects KEY=VALUE, got {pair!r} (e.g. -t team=churn)")
        tags[key.strip()] = value
    return tags


@magics_class
class TrackMagics(Magics):
    """The `%%track` cell magic."""

    @magic_arguments()
    @argument("-n", "--name", default=None, help="run name (default: <experiment>-<time>)")
    @argument("--no-autolog", action="store_true", help="no sklearn autolog and no automatic model")
    @argument(
        "-t", "--tag", action="append", default=[], metavar="KEY=VALUE", help="run tag (repeatable)"
    )
    @cell_magic
    def track(self, line: str, cell: str) -> Any:
        """Run this cell inside a tracked MLflow run of the notebook's experiment.

        The run records the notebook's `parameters` cell values as params (papermill's injected
        values win), sklearn autolog metrics and the fitted model, `nb_mlops.log(...)` metrics,
        the notebook file and its sha256, per-cell hashes, a hidden-state report, the
        environment and the git commit. A raising cell ends the run FAILED (the exception is
        re-raised); an interrupt ends it KILLED. The cell ends with one line: run name, id,
        status, model state (logged / pending / none / not logged: why) and a link to the run.

        Example::

            In [1]: %load_ext nb_mlops
            In [2]: %%track -n baseline -t team=churn
               ...: model = LogisticRegression(C=C).fit(X, y)
               ...: nb_mlops.log(accuracy=model.score(X_test, y_test))
        """
        args = parse_argstring(self.track, line)
        tags = _parse_tags(args.tag)
        if not cell.strip():
            raise UsageError("%%track needs code below it: put it on the first line of a cell")
        shell = self.shell
        assert shell is not None
        _go.set()  # a %%track in the very cell that loaded the extension: warm up now
        _registered.wait(30)
        _bind(shell)
        from nb_mlops.core import tracking

        raw = f"%%track {line}\n{cell}".rstrip() if line else f"%%track\n{cell}"
        run = None
        try:
            with tracking.track(
                name=args.name, autolog=not args.no_autolog, tags=tags, cell=_raw_cell(shell, raw)
            ) as run:
                return _run(shell, cell)
        finally:
            if run is not None:
                _summarise(shell, run)


def _summarise(shell: Any, run: Any) -> None:
    """End the cell with one line: run name, id, status, model state, link (a widget whose model
    state follows the background writer where widgets render, plain text elsewhere)."""
    from nb_mlops.core.capture import models as capture_models
    from nb_mlops.widgets.run_summary import RunSummary

    # on a server the id may still be on its way: the summary never waits for it
    run_id = run.known_id or "(id pending)"
    summary = RunSummary(run.name, run_id, run.status, _run_link(run) if run.known_id else "")
    if getattr(shell, "kernel", None) is None:  # terminal IPython: no widgets, no HTML
        summary.models = capture_models.status(run.key)
        print(summary.text())
        return
    from IPython.display import display

    summary.widget()
    capture_models.watch_status(run.key, summary.update)  # before reading: no change missed
    summary.update(capture_models.status(run.key))
    display(summary)  # type: ignore[no-untyped-call]


def _run_link(run: Any) -> str:
    from nb_mlops.core.config import load_config
    from nb_mlops.core.errors import NbMlopsError
    from nb_mlops.core.runs import run_url, ui_url

    try:
        store = getattr(run, "_store", None)  # the configuration the run was made with
        cfg = store.cfg if store is not None else load_config()
        return run_url(ui_url(cfg), run.experiment_id, run.run_id)
    except NbMlopsError:  # a bad ui_url setting must not hide the run's summary
        return ""


def _raw_cell(shell: Any, fallback: str) -> str:
    history = shell.history_manager.input_hist_raw
    return str(history[-1]) if history else fallback


def _run(shell: Any, cell: str) -> Any:
    """Execute the cell body in the user namespace; return the value of a final expression (so
    IPython displays it, as for an untracked cell). Exceptions propagate to `track()`."""
    source = shell.transform_cell(cell)
    filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
    tree = ast.parse(source, filename=filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    ns = shell.user_ns
    exec(compile(tree, filename, "exec"), shell.user_global_ns, ns)  # noqa: S102 - the user's cell
    if last is not None:
        return eval(compile(last, filename, "eval"), shell.user_global_ns, ns)  # noqa: S307
    return None
