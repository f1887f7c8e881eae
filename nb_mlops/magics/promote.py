"""`%promote` and `%lineage`: the notebook face of `nb_mlops.core.promotion` and `nb_mlops.core.lineage`.

In a kernel with a widget frontend `%promote` shows the Promote panel (gates, verdicts, a Promote
button); elsewhere, or with `--yes`, it promotes at once and prints the gate table. Importing this
module loads no mlflow and no ipywidgets.
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

__all__ = ["PromoteMagics"]


def _has_widget_frontend(shell: Any) -> bool:
    """A kernel (JupyterLab, papermill, VS Code) can carry widgets; terminal IPython cannot."""
    return getattr(shell, "kernel", None) is not None


def _one_line(exc: Exception) -> UsageError:
    return UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _default_model(run_id: str | None, latest: str | None) -> str:
    """`[tool.nb_mlops] model = ...`, else the candidate's pipeline name."""
    from nb_mlops.core import store
    from nb_mlops.core.config import load_config

    cfg = load_config()
    configured = cfg.settings.get("model")
    if isinstance(configured, str) and configured:
        return configured
    if latest:
        return latest
    from mlflow.exceptions import MlflowException

    try:
        name = store.client(cfg).get_run(str(run_id)).data.tags.get("nb_mlops.pipeline")
    except MlflowException as exc:
        raise UsageError(f"no run {run_id} in the store; check the id with `%mlops runs`") from exc
    if not name:
        raise UsageError(
            f"run {run_id} is not a pipeline run; give --model NAME (and build the pipeline first)"
        )
    return str(name)


@magics_class
class PromoteMagics(Magics):
    """`%promote` and `%lineage`."""

    @magic_arguments()
    @argument("run_id", nargs="?", default=None, help="the pipeline run to promote")
    @argument("--latest", metavar="PIPELINE", help="promote the newest run of this pipeline")
    @argument(
        "-m",
        "--model",
        help="registered model name (default: config `model`, else the pipeline name)",
    )
    @argument("-r", "--reason", help="why (journaled; required with --force)")
    @argument("--force", action="store_true", help="promote even if gates fail (needs --reason)")
    @argument("-y", "--yes", action="store_true", help="promote now, without the panel")
    @line_magic
    def promote(self, line: str) -> Any:
        """Check a pipeline run against the gates and promote its model to `champion`.

        Shows a panel with every gate, its measured value and verdict, and a Promote button
        (text table and immediate promotion without a widget frontend, or with --yes). A blocked
        promotion changes nothing; --force --reason TEXT overrides it, journaled as forced.

        Example::

            In [1]: %promote --latest churn --model churn -r "weekly retrain"
            In [2]: %promote 3f2a9c41 --model churn --force -r "hotfix" --yes
            PROMOTED: churn version 4 is champion (FORCED past metric:accuracy) ...
        """
        args = parse_argstring(cast(Any, self).promote, line)
        if bool(args.run_id) == bool(args.latest):
            raise UsageError("give a RUN_ID or --latest PIPELINE (one of them)")
        if args.force and not (args.reason and args.reason.strip()):
            raise UsageError("--force needs --reason TEXT saying why the failed gates are accepted")
        from nb_mlops.core.errors import NbMlopsError
        from nb_mlops.core.promotion import PromotionBlocked, evaluate, promote

        model = args.model or _default_model(args.run_id, args.latest)

        def do(reason: str | None, force: bool) -> Any:
            return promote(args.run_id, model=model, latest=args.latest, reason=reason, force=force)

        if args.yes or not _has_widget_frontend(self.shell):
            try:
                decision = do(args.reason, args.force)
            except PromotionBlocked as blocked:
                print(blocked.decision.table())
                raise _one_line(blocked) from blocked
            except NbMlopsError as exc:
                raise _one_line(exc) from exc
            print(decision.table())
            print(decision.summary())
            return None
        try:
            checked = evaluate(args.run_id, model=model, latest=args.latest)
        except NbMlopsError as exc:
            raise _one_line(exc) from exc
        from IPython.display import display

        from nb_mlops.widgets.promote import PromotePanel

        panel = PromotePanel(checked, do, reason=args.reason)
        if args.force:
            panel.force.value = True
        cast(Callable[[object], None], display)(panel)
        return None

    @magic_arguments()
    @argument(
        "ref", nargs="?", default=None, help="NAME, NAME@ALIAS or NAME/VERSION (default: @champion)"
    )
    @line_magic
    def lineage(self, line: str) -> None:
        """Show where a model version came from: pipeline run, pipeline version, notebook
        (path, sha256, git commit), data snapshots, environment, parameters.

        Example::

            In [1]: %lineage churn
            model churn version 3 [@champion]
            ← pipeline run 3f2a9c41… (SUCCEEDED, mode pipeline)
            ...
        """
        args = parse_argstring(cast(Any, self).lineage, line)
        from IPython.display import display

        from nb_mlops.core.config import load_config
        from nb_mlops.core.errors import NbMlopsError
        from nb_mlops.core.lineage import lineage
        from nb_mlops.present.promote import lineage_html

        ref = args.ref or load_config().settings.get("model")
        if not ref:
            raise UsageError(
                "give a model: %lineage NAME[@ALIAS|/VERSION] (or set `model` in [tool.nb_mlops])"
            )
        try:
            found = lineage(str(ref))
        except NbMlopsError as exc:
            raise _one_line(exc) from exc
        cast(Callable[..., None], display)(
            {"text/plain": found.text(), "text/html": lineage_html(found)}, raw=True
        )
