"""`%mlops`: status, experiment choice, configuration and the runs view (a face over `nb_mlops.core`).

The runs view is `nb_mlops.widgets.runs.RunsView` in a kernel (with HTML/text fallbacks in the same
display) and a text/HTML table (`nb_mlops.present.runs.RunsTable`) elsewhere. Importing this module
loads no mlflow, pandas or ipywidgets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from IPython.core import magic_arguments as _ma
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

_F = TypeVar("_F", bound=Callable[..., Any])
# IPython's argument decorators are untyped; these aliases give them their real shapes.
magic_arguments = cast(Callable[[], Callable[[_F], _F]], _ma.magic_arguments)
argument = cast(Callable[..., Callable[[_F], _F]], _ma.argument)
parse_argstring = cast(Callable[[Any, str], Any], _ma.parse_argstring)

__all__ = ["MlopsMagics"]

COMMANDS = ("status", "experiment", "config", "runs")
_RUNS_ONLY = ("metric", "sort", "experiment", "asc", "limit")


def _has_widget_frontend(shell: Any) -> bool:
    """A kernel (JupyterLab, papermill, VS Code) can carry widgets; terminal IPython cannot."""
    return getattr(shell, "kernel", None) is not None


@magics_class
class MlopsMagics(Magics):
    """The `%mlops` line magic."""

    @magic_arguments()
    @argument(
        "command",
        nargs="?",
        default="status",
        help="status (default) | experiment [NAME] | config | runs",
    )
    @argument("name", nargs="?", default=None, help="with `experiment`: the experiment to use")
    @argument("-m", "--metric", default=None, help="runs: sort by this metric and plot it")
    @argument(
        "-s",
        "--sort",
        default=None,
        help="runs: sort by params.K, tags.K, start_time, end_time, status or run_name",
    )
    @argument("-n", "--limit", type=int, default=None, help="runs: runs per page (default 50)")
    @argument("--asc", action="store_true", help="runs: smallest first (default: largest first)")
    @argument(
        "-e", "--experiment", default=None, help="runs: another experiment than the notebook's"
    )
    @line_magic
    def mlops(self, line: str) -> None:
        """Show what nb_mlops tracks here, pick the experiment, and browse its runs.

        `%mlops` prints the store, the experiment, the notebook, the last run of this session and
        hidden-state warnings (cells run out of order, edited after they ran, never run).
        `%mlops experiment NAME` sends the next `%%track` runs to experiment NAME.
        `%mlops config` prints the resolved configuration.
        `%mlops runs` shows the experiment's runs: a sortable, paged table (status, duration,
        params, metrics, a link to each run in the MLflow UI) and a plot of the chosen metric.
        Only one page is read from the store, however many runs there are.

        Examples::

            In [1]: %mlops
            In [2]: %mlops experiment churn-model
            In [3]: %mlops runs --metric accuracy --limit 20
            In [4]: %mlops runs --sort params.C --asc
            In [5]: %mlops config
        """
        this: Any = self  # line_magic hides the bound method from mypy
        args = parse_argstring(this.mlops, line)
        # IPython splits magic lines without removing quotes: `%mlops experiment "a b"` means a b.
        for name in ("name", "experiment", "metric", "sort"):
            setattr(args, name, _unquote(getattr(args, name)))
        if args.command not in COMMANDS:
            raise UsageError(
                f"unknown %mlops command {args.command!r}; use one of: {', '.join(COMMANDS)}"
            )
        if args.command != "runs":
            given = [f"--{opt}" for opt in _RUNS_ONLY if getattr(args, opt) not in (None, False)]
            if given:
                raise UsageError(f"{', '.join(given)}: options of `%mlops runs` only")
        if args.name is not None and args.command != "experiment":
            raise UsageError(
                f"unexpected {args.name!r}: only `%mlops experiment NAME` takes a name"
            )
        from nb_mlops.core.errors import NbMlopsError

        try:
            if args.command == "status":
                self._status()
            elif args.command == "experiment":
                self._experiment(args.name)
            elif args.command == "config":
                self._config()
            else:
                self._runs(args)
        except NbMlopsError as exc:
            raise UsageError(str(exc)) from None

    # --- subcommands -----------------------------------------------------------------------------

    def _status(self) -> None:
        from nb_mlops.core import tracking
        from nb_mlops.core.config import load_config
        from nb_mlops.core.errors import NbMlopsError
        from nb_mlops.core.runs import run_row

        cfg = load_config()
        store = "embedded" if cfg.is_embedded else "team server"
        nb = tracking.notebook_path()
        lines = [
            "nb_mlops status",
            f"  root        {cfg.root}",
            f"  store       {cfg.tracking_uri}  ({store})",
            f"  experiment  {tracking.current_experiment_name(cfg)}",
            f"  notebook    {nb if nb else 'not detected (name the experiment with %mlops experiment NAME)'}",
        ]
        last = tracking.last_run_id()
        if last is None:
            lines.append("  last run    none in this session (use %%track on a cell)")
        else:
            try:
                tracking.flush(timeout=5.0)  # show the run as stored, not half-written
            except NbMlopsError as exc:
                lines.append(f"  NOT SAVED   {exc}")
            row = run_row(last, cfg)
            if row is None:
                lines.append(f"  last run    {last}  (not stored yet)")
            else:
                shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(row.metrics.items())[:6])
                took = f", {row.duration_s:.2f}s" if row.duration_s is not None else ""
                lines.append(f"  last run    {row.name or row.run_id} [{row.status}{took}] {shown}")
                lines.append(f"              {row.url}")
        warnings = tracking.hidden_state_warnings()
        if warnings:
            lines.append("  hidden state:")
            lines += [f"    - {w}" for w in warnings]
        else:
            lines.append("  hidden state  none found")
        print("\n".join(lines))

    def _experiment(self, name: str | None) -> None:
        from nb_mlops.core import tracking

        if name is not None:
            tracking.set_experiment(name)
        current = tracking.current_experiment_name()
        if name is not None and current != name:
            # The config file pins the experiment; say so instead of silently ignoring the ask.
            raise UsageError(
                f"experiment stays {current!r}: `experiment` is set in the project config; "
                "remove it there to choose per notebook"
            )
        print(f"experiment: {current}")

    def _config(self) -> None:
        import json

        from nb_mlops.core.config import load_config
        from nb_mlops.core.runs import ui_url

        cfg = load_config()
        values = cfg.as_dict()
        values["ui_url"] = ui_url(cfg)
        width = max(len(key) for key in values)
        for key, value in values.items():
            shown = json.dumps(value) if isinstance(value, dict | list) else value
            print(f"{key:<{width}}  {shown if value is not None else '-'}")

    def _runs(self, args: Any) -> None:
        from IPython.display import display

        from nb_mlops.core.config import load_config
        from nb_mlops.core.runs import runs
        from nb_mlops.present.runs import RunsTable
        from nb_mlops.widgets.runs import RunsView

        if args.metric and args.sort:
            raise UsageError("give --metric or --sort, not both")
        cfg = load_config()
        from nb_mlops.core import tracking

        # The notebook's experiment without runs yet is an empty view; a name typed must exist.
        experiment = args.experiment or tracking.current_experiment_name(cfg)
        page = runs(
            experiment,
            missing_ok=args.experiment is None,
            metric=args.metric,
            order_by=args.sort,
            ascending=args.asc,
            limit=50 if args.limit is None else args.limit,
            cfg=cfg,
        )
        if page.sort_key_missing and page.order is not None:
            known = page.metric_keys if page.order.kind == "metrics" else page.param_keys
            raise UsageError(
                f"no run of experiment {page.experiment!r} has {page.order.label()!r}; "
                f"known: {', '.join(known) or 'none'}"
            )
        view = RunsView(page, cfg=cfg) if _has_widget_frontend(self.shell) else RunsTable(page)
        cast(Callable[[object], None], display)(view)


def _unquote(value: str | None) -> str | None:
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _fmt(value: float) -> str:
    return f"{value:.4g}"
