"""The `nb-mlops` command: a thin face over `nb_mlops.core` and `nb_mlops.pipeline`.

Subcommands live one module each and are imported only when invoked, so `nb-mlops --help` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from nb_mlops import __version__

# command name → "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "config": "nb_mlops.cli.config:config",
    "store": "nb_mlops.cli.store:store",
    "runs": "nb_mlops.cli.runs:runs",
    "ui": "nb_mlops.cli.runs:ui",
    "demo": "nb_mlops.cli.demo:demo",
    "data": "nb_mlops.cli.data:data",
    "pipeline": "nb_mlops.cli.pipeline:pipeline",
    "promote": "nb_mlops.cli.promote:promote",
    "rollback": "nb_mlops.cli.promote:rollback",
    "history": "nb_mlops.cli.promote:history",
    "approvals": "nb_mlops.cli.approvals:approvals",
    "approve": "nb_mlops.cli.approvals:approve",
    "reject": "nb_mlops.cli.approvals:reject",
    "lineage": "nb_mlops.cli.promote:lineage",
    "score": "nb_mlops.cli.score:score",
    "monitor": "nb_mlops.cli.monitor:monitor",
}

HELP = {
    "config": "Show the resolved configuration (root, store, experiment).",
    "store": "Check the embedded tracking store, or start a new one.",
    "runs": "List tracked runs of an experiment.",
    "ui": "Open the MLflow UI on the configured store.",
    "demo": "Run the quickstart end to end on the embedded store.",
    "data": "Snapshot, list, diff, restore and verify data versions.",
    "pipeline": "Build, show and run notebook pipelines.",
    "promote": "Promote a pipeline run's model to champion, through the gates.",
    "rollback": "Move a model's champion alias back to an earlier version.",
    "history": "Show a model's promotion journal.",
    "approvals": "List promotion requests waiting for an approver.",
    "approve": "Approve another user's promotion request (the champion moves).",
    "reject": "Reject a promotion request (the champion stays).",
    "lineage": "Show where a model version came from.",
    "score": "Score a data snapshot with a model; store the predictions.",
    "monitor": "Check a champion on new data: drift, decay, policy (exit 3 drift, 4 decay).",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None or not _available(cmd_name):
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = spec.partition(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _available(name: str) -> bool:
    module_name = COMMANDS[name].partition(":")[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nb-mlops")
def cli() -> None:
    """nb-mlops: from notebook to production — tracked runs, data versions, pipelines, promotion.

    Every command reads the project configuration ([tool.nb_mlops] in pyproject.toml, or
    nb_mlops.toml) from the current folder upwards. Run `nb-mlops COMMAND --help` for details.
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nb-mlops` script: nb_mlops errors become one line and exit status 1."""
    from nb_mlops.core.errors import NbMlopsError

    try:
        # standalone_mode=False returns ctx.exit(n)'s n instead of raising SystemExit
        status = cli.main(args=argv, prog_name="nb-mlops", standalone_mode=False)
    except NbMlopsError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:
    """Console-script wrapper: exit with `main()`'s status."""
    from nb_mlops.cli.startup import defer_slow_imports

    defer_slow_imports()  # this process is ours: see startup.py
    status = main()
    if status > 128:
        # stopped by a signal (Ctrl-C, SIGTERM): exit handlers run, but not the interpreter's
        # teardown, a garbage collection of every loaded module (≈ 0.5 s with papermill's)
        import atexit
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
        os._exit(status)
    sys.exit(status)
