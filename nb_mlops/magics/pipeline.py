# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""`%pipeline build|run` and the `%%step NAME [--after A B]` cell magic: thin faces over
`nb_mlops.pipeline`. Importing this module loads no mlflow, pandas or papermill."""

from __future__ import annotations

import os
import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

__all__ = ["PipelineMagics"]

_STEP_NAME = re.compile(r"^[a-z_][a-z0-9_]*\Z")


@magics_class
class PipelineMagics(Magics):
    """`%pipeline` and `%%step`."""

    @magic_arguments()
    @argument("action", choices=["build", "run"], help="build the notebook's pipeline, or run one")
    @argument(
        "target",
        nargs="?",
        help="build: the notebook (default: this one); run: pipeline name or folder",
    )
    @argument("-n", "--name", help="build: pipeline name (default: the notebook's stem)")
    @argument("-o", "--output", help="build: output folder (default: pipelines/NAME)")
    @argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run: a parameter value (repeatable)",
    )
    @argument("--executor", default="local", help="run: local or dask://HOST:PORT")
    @argument("--max-parallel", type=int, default=None, help="run: steps at once")
    @argument("--no-cache", action="store_true", help="run: run every step")
    @argument(
        "--resume", default=None, metavar="RUN_ID", help="run: re-run the failed steps of RUN_ID"
    )
    @line_magic
    def pipeline(self, line: str) -> Any:
        """Build this notebook's pipeline, or run a pipeline with a live progress table.

        Returns the built `Pipeline` or the `PipelineRun` (status, run_id, steps)::

            In [1]: %pipeline build
            In [2]: %pipeline run quickstart -p C=0.5
        """
        args = parse_argstring(self.pipeline, line)
        from nb_mlops.core.errors import NbMlopsError

        try:
            if args.action == "build":
                return self._build(args)
            return self._run(args)
        except NbMlopsError as exc:
            raise UsageError(str(exc)) from None

    def _notebook(self) -> str:
        assert self.shell is not None
        found = self.shell.user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME")
        if not found or not str(found).endswith(".ipynb"):
            raise UsageError(
                "cannot tell which notebook this is: give its path, e.g. %pipeline build train.ipynb"
            )
        return str(found)

    def _build(self, args: Any) -> Any:
        from nb_mlops.pipeline import build_pipeline

        spec = build_pipeline(args.target or self._notebook(), name=args.name, output=args.output)
        print(f"built pipeline {spec.name!r}: {' → '.join(spec.steps)} ({spec.dir})")
        return spec

    def _run(self, args: Any) -> Any:
        from nb_mlops.pipeline import run_pipeline
        from nb_mlops.widgets.pipeline import PipelineProgress

        if not args.target:
            raise UsageError("give the pipeline to run, e.g. %pipeline run quickstart -p C=0.5")
        params: dict[str, str] = {}
        for pair in args.param:
            key, sep, value = pair.partition("=")
            if not sep:
                raise UsageError(f"-p expects KEY=VALUE, got {pair!r} (e.g. -p C=0.5)")
            params[key] = value
        result = run_pipeline(
            args.target,
            params or None,
            executor=args.executor,
            max_parallel=args.max_parallel,
            cache=not args.no_cache,
            resume=args.resume,
            from_strings=True,
            progress=PipelineProgress(),
        )
        if not result.succeeded:
            print(f"FAILED: {result.error}")
        return result

    @magic_arguments()
    @argument("name", help="the step this cell starts (lower-case letters, digits, _)")
    @argument("--after", nargs="+", default=[], metavar="STEP", help="steps that must run first")
    @cell_magic
    def step(self, line: str, cell: str) -> Any:
        """Mark the cell as the start of a pipeline step; interactively it just runs the cell.

        Same as the tags `step:NAME` and `prev:A`, read by `%pipeline build`::

            In [1]: %%step train --after features
               ...: model = fit(X, y)
        """
        args = parse_argstring(self.step, line)
        for name in [args.name, *args.after]:
            if not _STEP_NAME.match(name):
                raise UsageError(
                    f"step name {name!r} is not valid; use lower-case letters, digits and '_'"
                )
        # run as if the magic line were not there (IPython syntax included); errors propagate
        assert self.shell is not None
        self.shell.ex(self.shell.transform_cell(cell))
        return None
