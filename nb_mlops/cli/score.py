"""`nb-mlops score`: the command-line face of `nb_mlops.core.monitoring.score` (batch scoring)."""

from __future__ import annotations

import json

import click

__all__ = ["score"]


@click.command()
@click.argument("model")
@click.option("--data", "-d", required=True, metavar="NAME[@vN]", help="The snapshot to score.")
@click.option(
    "--out",
    "-o",
    metavar="NAME",
    help="Snapshot name of the predictions (default DATA-predictions).",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Rows per predict call.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def score(model: str, data: str, out: str | None, batch_rows: int, as_json: bool) -> None:
    """Score snapshot DATA with MODEL and store the predictions as a snapshot.

    MODEL is NAME (its champion), NAME@ALIAS or NAME/VERSION. The model's files are checked
    against the digest recorded at promotion before it is loaded. The run is recorded in MLflow
    (nb_mlops.mode=score); the predictions' snapshot names the model version, the input
    version and the run in its lineage.

    \b
    Examples:
      nb-mlops score churn --data batch@v3
      nb-mlops score churn@challenger --data batch --out batch-challenger --json
    """
    from nb_mlops.core.monitoring import score as do_score

    result = do_score(model, data, out, batch_rows=batch_rows)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
        return
    click.echo(result.summary())
