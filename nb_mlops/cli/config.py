"""`nb-mlops config`: print the resolved configuration, or check it (`--check`)."""

from __future__ import annotations

import json

import click

from nb_mlops.core.config import load_config


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys: root, tracking_uri, ...).")
@click.option(
    "--check",
    is_flag=True,
    help="Check every key against the schema: one `error:` line per problem, exit status 1.",
)
def config(as_json: bool, check: bool) -> None:
    """Show the project root, the tracking and registry URIs, the artifact root, the data store
    and the experiment, as resolved from the config file and the environment.

    Unknown keys (with a did-you-mean), wrong types and bad gate thresholds are problems:
    promotion refuses while there is any. `--check` lists them all and exits 1.

    \b
    Example:
      nb-mlops config --check
    """
    cfg = load_config()
    if check:
        for problem in cfg.problems:
            click.echo(f"error: {problem}", err=True)
        if cfg.problems:
            raise click.exceptions.Exit(1)
        click.echo(f"ok: {cfg.config_file or 'no configuration file (defaults)'}")
        return
    values = cfg.as_dict()
    if as_json:
        click.echo(json.dumps(values, indent=2))
        return
    width = max(len(key) for key in values)
    for key, value in values.items():
        if key != "problems":
            click.echo(f"{key:<{width}}  {value if value is not None else '-'}")
    for problem in cfg.problems:
        click.echo(f"problem: {problem}", err=True)
