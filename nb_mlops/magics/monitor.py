"""`%score` and `%monitor`: the notebook face of `nb_mlops.core.monitoring`.

`%monitor` shows the monitoring view (verdict, drift table, distribution plots) in a kernel with a
widget frontend, and the check as HTML/text elsewhere. Importing this module loads no mlflow and
no ipywidgets.
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

__all__ = ["MonitorMagics"]


def _one_line(exc: Exception) -> UsageError:
    return UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _model(given: str | None) -> str:
    """The model argument, else `[tool.nb_mlops] model`."""
    if given:
        return given
    from nb_mlops.core.config import load_config

    configured = load_config().settings.get("model")
    if isinstance(configured, str) and configured:
        return configured
    raise UsageError(
        "give a model: %monitor NAME --data SNAPSHOT (or set `model` in [tool.nb_mlops])"
    )


def _display(value: Any) -> None:
    from IPython.display import display

    cast(Callable[[object], None], display)(value)


@magics_class
class MonitorMagics(Magics):
    """`%score` and `%monitor`."""

    @magic_arguments()
    @argument(
        "model", nargs="?", default=None, help="NAME (its champion), NAME@ALIAS or NAME/VERSION"
    )
    @argument("-d", "--data", required=True, help="the snapshot to score: NAME[@vN]")
    @argument("-o", "--out", help="snapshot name of the predictions (default DATA-predictions)")
    @line_magic
    def score(self, line: str) -> Any:
        """Score a data snapshot with a registered model and snapshot the predictions.

        The run is recorded in MLflow (`nb_mlops.mode=score`); the predictions' snapshot names the
        model version, the input version and the run. Returns the predictions frame.

        Example::

            In [1]: preds = %score churn --data batch@v3
            SCORED: 12,000 rows of batch@v3 with churn v4 → batch-predictions@v1 in 0.41 s ...
        """
        args = parse_argstring(cast(Any, self).score, line)
        from nb_mlops.core.errors import NbMlopsError
        from nb_mlops.core.monitoring import score

        try:
            result = score(_model(args.model), args.data, args.out)
        except NbMlopsError as exc:
            raise _one_line(exc) from exc
        print(result.summary())
        return result.predictions

    @magic_arguments()
    @argument(
        "model", nargs="?", default=None, help="NAME (its champion), NAME@ALIAS or NAME/VERSION"
    )
    @argument("-d", "--data", required=True, help="the snapshot to check: NAME[@vN]")
    @argument("-l", "--labels", help="label column (or NAME@vN:COLUMN): measures decay")
    @argument("--exact", action="store_true", help="compute drift from every row")
    @argument("--reference", help="compare with NAME@vN (default: the champion's training data)")
    @argument("--no-act", action="store_true", help="decide the policy's actions, do not do them")
    @line_magic
    def monitor(self, line: str) -> None:
        """Check a model's champion on new data: drift against its training snapshot, decay with
        labels, and the policy of `[tool.nb_mlops.monitor.policy]` (alerts, rollback, retrain).

        Shows the verdict (ok, drift or decay), the drift table and each feature's reference and
        current distributions. The check is an MLflow run (`nb_mlops.mode=monitor`) with an HTML
        report.

        Example::

            In [1]: %monitor churn --data batch@v3 --labels churned
            DRIFT: churn v4 on batch@v3; 2/9 features drifted (22%) ...
        """
        args = parse_argstring(cast(Any, self).monitor, line)
        from nb_mlops.core.errors import NbMlopsError
        from nb_mlops.core.monitoring import monitor

        try:
            result = monitor(
                _model(args.model),
                args.data,
                labels=args.labels,
                exact=args.exact,
                reference=args.reference,
                act=not args.no_act,
            )
        except NbMlopsError as exc:
            raise _one_line(exc) from exc
        if getattr(self.shell, "kernel", None) is not None:
            from nb_mlops.widgets.monitor import MonitorView

            _display(MonitorView(result))
        else:
            _display(result)
