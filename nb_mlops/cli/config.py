"""`nb-mlops config`: print the resolved configuration."""

from __future__ import annotations

import json

import click

from nb_mlops.core.config import load_config


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys: root, tracking_uri, ...).")
def config(as_json: bool) -> None:
    """Show the project root, the tracking and registry URIs, the artifact root, the data store
    and the experiment, as resolved from the config file and the environment."""
    values = load_config().as_dict()
    if as_json:
        click.echo(json.dumps(values, indent=2))
        return
    width = max(len(key) for key in values)
    for key, value in values.items():
        click.echo(f"{key:<{width}}  {value if value is not None else '-'}")
