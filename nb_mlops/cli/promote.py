"""`nb-mlops promote | rollback | history | lineage`: the command-line face of `nb_mlops.core.promotion`
and `nb_mlops.core.lineage` (tables with rich, `--json` for scripts)."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["blocked_hint", "history", "lineage", "promote", "rollback"]

_VERDICT_STYLE = {"PASS": "green", "FAIL": "bold red", "SKIP": "yellow"}


def _console() -> Any:
    import sys

    from rich.console import Console

    # piped output (scripts, logs, CI) gets wide tables rather than folded cells
    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=False, width=width)


def blocked_hint(model: str) -> str:
    """What to do after a BLOCKED promotion (nothing changed; the attempt is journaled)."""
    return (
        f"BLOCKED: the champion of {model} stays as it was; the attempt and every gate are "
        f"journaled: `nb-mlops history {model}`"
    )


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _gate_table(decision: Any) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"gates: run {decision.run_id} → {decision.model}", title_justify="left")
    for column in ("gate", "verdict", "measured", "expected", "detail"):
        table.add_column(column, overflow="fold")
    from nb_mlops.core.promotion.gates import format_value

    for gate in decision.gates:
        table.add_row(
            Text(gate.gate),
            Text(gate.verdict, style=_VERDICT_STYLE.get(gate.verdict, "")),
            Text(format_value(gate.measured)),
            Text(format_value(gate.expected)),
            Text(gate.detail),
        )
    if not decision.gates:
        table.add_row(Text("(no gates configured)"), Text(""), Text(""), Text(""), Text(""))
    return table


@click.command()
@click.argument("run_id", required=False)
@click.option("--latest", metavar="PIPELINE", help="Promote the newest run of this pipeline.")
@click.option("--model", "-m", required=True, metavar="NAME", help="Registered model name.")
@click.option("--reason", "-r", metavar="TEXT", help="Why (journaled; required with --force).")
@click.option("--force", is_flag=True, help="Promote even if gates fail (needs --reason).")
@click.option(
    "--source",
    metavar="NAME|URI",
    help="The model to register when the run logged several: its name as the tracked cell "
    "logged it (`model`, `models-rf`), models:/ID, or a folder in the run's artifacts. "
    "Default: the newest model that predicts (the decision names the others).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def promote(
    run_id: str | None,
    latest: str | None,
    model: str,
    reason: str | None,
    force: bool,
    source: str | None,
    as_json: bool,
) -> None:
    """Promote a pipeline run's model to `champion` of model NAME, through the gates.

    The run must be a successful pipeline run (not an interactive one) that logged a model. Every
    gate of [tool.nb_mlops.gates] is checked and shown; any FAIL blocks the promotion (exit 1,
    nothing changes in the registry) unless --force --reason TEXT is given. Every attempt is
    journaled (see `nb-mlops history NAME`). When the configuration sets
    [tool.nb_mlops.promotion] require_approval = true, a passing run becomes a request that
    another user approves (`nb-mlops approvals`, `nb-mlops approve ID`).

    \b
    Examples:
      nb-mlops promote 3f2a9c... --model churn --reason "weekly retrain"
      nb-mlops promote --latest train --model churn --json
    """
    from nb_mlops.core.promotion import PromotionBlocked
    from nb_mlops.core.promotion import promote as do_promote

    try:
        decision = do_promote(
            run_id, model=model, latest=latest, reason=reason, force=force, source=source
        )
    except PromotionBlocked as blocked:
        if as_json:
            _echo_json(blocked.decision.as_dict())
        else:
            _console().print(_gate_table(blocked.decision))
            click.echo(blocked_hint(model))
        raise
    if as_json:
        _echo_json(decision.as_dict())
        return
    console = _console()
    console.print(_gate_table(decision))
    console.print(decision.summary(), markup=False)
    if decision.status != "PROMOTED":
        return  # a request waiting for an approver: the champion has not moved
    from nb_mlops.core.config import load_config
    from nb_mlops.core.runs import model_url, ui_url

    console.print(f"model page: {model_url(ui_url(load_config()), model, decision.version)}")


@click.command()
@click.argument("name")
@click.option(
    "--to", "to", metavar="VERSION", help="Version to restore (default: the previous champion)."
)
@click.option("--reason", "-r", required=True, metavar="TEXT", help="Why (journaled).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rollback(name: str, to: str | None, reason: str, as_json: bool) -> None:
    """Move model NAME's `champion` alias back to the version it replaced (or to --to VERSION).

    \b
    Example:
      nb-mlops rollback churn --reason "accuracy dropped on Monday's data"
    """
    from nb_mlops.core.promotion import rollback as do_rollback

    decision = do_rollback(name, to=to, reason=reason)
    if as_json:
        _echo_json(decision.as_dict())
    else:
        click.echo(decision.summary())


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of entries, oldest first.")
def history(name: str, as_json: bool) -> None:
    """Show the promotion journal of model NAME: promotions, forced ones, blocked attempts, rollbacks.

    \b
    Example:
      nb-mlops history churn --json
    """
    from nb_mlops.core.promotion import history as read_history

    entries = read_history(name)
    if as_json:
        _echo_json([entry.as_dict() for entry in entries])
        return
    if not entries:
        click.echo(f"no journal entries for {name}")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"promotion journal of {name} (oldest first)", title_justify="left")
    for column in ("when (UTC)", "who", "action", "from → to", "state", "run", "reason", "gates"):
        table.add_column(column, overflow="fold")
    for e in entries:
        gates = ", ".join(f"{g['gate']}={g['verdict']}" for g in e.gates) or "-"
        table.add_row(
            *(
                Text(str(cell))
                for cell in (
                    e.when,
                    e.who,
                    e.action,
                    f"{e.from_version or '-'} → {e.to_version or '-'}",
                    e.state + (" (recovered)" if e.recovered else ""),
                    (e.candidate_run or "-")[:12],
                    e.reason or "-",
                    gates,
                )
            )
        )
    _console().print(table)


@click.command()
@click.argument("ref", metavar="NAME[@ALIAS|/VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print the lineage as JSON.")
def lineage(ref: str, as_json: bool) -> None:
    """Show where a model version came from (default alias: @champion).

    model version ← pipeline run ← pipeline version ← notebook (path, sha256, git commit) ←
    data snapshots (name@vN, digest) ← environment ← parameters.

    \b
    Examples:
      nb-mlops lineage churn
      nb-mlops lineage churn/3 --json
    """
    from nb_mlops.core.lineage import lineage as read_lineage

    found = read_lineage(ref)
    if as_json:
        _echo_json(found.as_dict())
    else:
        click.echo(found.text())
