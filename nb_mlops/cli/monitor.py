"""`nb-mlops monitor`: the command-line face of `nb_mlops.core.monitoring.monitor`, with exit codes
a scheduler can act on: 0 no drift, 3 drift, 4 decay, 1 error."""

from __future__ import annotations

import json

import click

__all__ = ["monitor"]


@click.command()
@click.argument("model")
@click.option("--data", "-d", required=True, metavar="NAME[@vN]", help="The snapshot to check.")
@click.option(
    "--labels",
    "-l",
    metavar="COLUMN",
    help="Label column in DATA (or NAME@vN:COLUMN of another snapshot): measures decay.",
)
@click.option("--exact", is_flag=True, help="Compute drift from every row, not the sketches.")
@click.option(
    "--reference",
    metavar="NAME@vN",
    help="Compare with this snapshot (default: the champion's training snapshot).",
)
@click.option(
    "--no-act", "no_act", is_flag=True, help="Decide the policy's actions without doing them."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def monitor(
    ctx: click.Context,
    model: str,
    data: str,
    labels: str | None,
    exact: bool,
    reference: str | None,
    no_act: bool,
    as_json: bool,
) -> None:
    """Check MODEL's champion on snapshot DATA: drift against its training data, decay with
    labels, then the policy of [tool.nb_mlops.monitor.policy] (alerts, rollback, retrain).

    Drift is decided on effect sizes (KS D, Wasserstein, PSI; chi-square's Cramér's V, PSI,
    Jensen-Shannon) against [tool.nb_mlops.monitor.thresholds]; p-values are shown only. The
    check is an MLflow run (nb_mlops.mode=monitor) with an HTML report.

    Exit status: 0 no drift, 3 drift, 4 decay (worse metrics than at promotion), 1 error.

    \b
    Examples:
      nb-mlops monitor churn --data batch@v3
      nb-mlops monitor churn --data labelled@v2 --labels churned --json
    """
    from nb_mlops.core.monitoring import monitor as do_monitor

    result = do_monitor(
        model, data, labels=labels, exact=exact, reference=reference, act=not no_act
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        click.echo(result.text())
        if result.report_uri:
            click.echo(f"report: {result.report_uri}")
    ctx.exit(result.exit_code)
