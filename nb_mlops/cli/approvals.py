"""`nb-mlops approvals | approve | reject`: the command-line face of promotion requests
(`nb_mlops.core.promotion.approval`); the acting user is `NB_MLOPS_USER`, else the OS user."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["approvals", "approve", "reject"]


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.command()
@click.argument("model", required=False)
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON list of requests, oldest first."
)
def approvals(model: str | None, as_json: bool) -> None:
    """List the promotion requests waiting for an approver (of MODEL, or of every model).

    A request is stale when the champion changed since it was made: approving it is refused.

    \b
    Examples:
      nb-mlops approvals
      nb-mlops approvals churn --json
    """
    from nb_mlops.core.promotion import approvals as pending

    found = pending(model)
    if as_json:
        _echo_json([request.as_dict() for request in found])
        return
    if not found:
        click.echo(f"no pending promotion requests{f' for {model}' if model else ''}")
        return
    for r in found:
        gates = ", ".join(f"{g['gate']}={g['verdict']}" for g in r.gates) or "no gates"
        click.echo(
            f"{r.id}  {r.model}  run {r.run_id}  by {r.requester} at {r.when}  champion "
            f"{r.champion or 'none'}{'  STALE' if r.stale else ''}  [{gates}]  {r.reason or '-'}"
        )


@click.command()
@click.argument("request_id")
@click.option("--reason", "-r", metavar="TEXT", help="Why it is approved (journaled).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def approve(request_id: str, reason: str | None, as_json: bool) -> None:
    """Approve promotion request REQUEST_ID (or a unique prefix of it, 6 characters or more).

    The gates run again and the champion moves; the journal names the requester and you as
    approver. You must be in [tool.nb_mlops.promotion] approvers and not the requester; a request
    already decided, or made against another champion than the current one, is refused.

    \b
    Example:
      nb-mlops approve 3f2a9c01 --reason "reviewed the gate table"
    """
    from nb_mlops.core.promotion import approve as do_approve

    decision = do_approve(request_id, reason=reason)
    if as_json:
        _echo_json(decision.as_dict())
    else:
        click.echo(decision.summary())


@click.command()
@click.argument("request_id")
@click.option("--reason", "-r", metavar="TEXT", help="Why it is rejected (journaled).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def reject(request_id: str, reason: str | None, as_json: bool) -> None:
    """Reject promotion request REQUEST_ID; the champion stays. Approvers may reject any
    request, the requester may withdraw their own.

    \b
    Example:
      nb-mlops reject 3f2a9c01 --reason "wait for Monday's data"
    """
    from nb_mlops.core.promotion import reject as do_reject

    decision = do_reject(request_id, reason=reason)
    if as_json:
        _echo_json(decision.as_dict())
    else:
        click.echo(decision.summary())
