"""`nb-mlops demo`: the quickstart end to end on the embedded store — tracked, snapshotted,
pipelined, promoted — printing what was recorded and how to look at it."""

from __future__ import annotations

import logging
import shutil
from importlib.resources import files
from pathlib import Path

import click

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import GatesBlocked


def _quickstart(cfg: Config, notebook: str | None) -> Path:
    """The quickstart notebook: the given one, the project's, or a copy of the packaged one."""
    if notebook:
        return Path(notebook).resolve()
    own = cfg.root / "notebooks" / "quickstart.ipynb"
    if own.is_file():
        return own
    own.parent.mkdir(parents=True, exist_ok=True)
    packaged = files("nb_mlops").joinpath("examples", "quickstart.ipynb")
    with packaged.open("rb") as src, own.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return own


def _title(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


@click.command()
@click.option(
    "--notebook",
    type=click.Path(exists=True, dir_okay=False),
    help="Default: notebooks/quickstart.ipynb.",
)
@click.option("--model", default="breast-cancer", show_default=True, help="Registered model name.")
def demo(notebook: str | None, model: str) -> None:
    """Run the quickstart end to end: execute the notebook headless (a tracked run and a data
    snapshot), build its pipeline, run it, promote its model through the gates, print lineage."""
    import papermill

    import nb_mlops

    cfg = load_config()
    source = _quickstart(cfg, notebook)
    out_dir = cfg.store_dir / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)

    _title(f"1/4 run {source.name} headless (papermill): %%track and %snapshot record it")
    executed = out_dir / f"{source.stem}.out.ipynb"
    logging.getLogger("papermill").setLevel(logging.ERROR)  # "unknown parameter" for the paths
    papermill.execute_notebook(
        str(source),
        str(executed),
        # what `papermill --inject-paths` passes: tracking records the notebook's real path
        parameters={"PAPERMILL_INPUT_PATH": str(source), "PAPERMILL_OUTPUT_PATH": str(executed)},
        cwd=str(source.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    for snap in nb_mlops.snapshots():
        click.echo(f"   data {snap.name}@v{snap.version}  {snap.digest[:16]}  rows={snap.rows}")

    _title("2/4 build the pipeline from the notebook's cell tags")
    pipeline = nb_mlops.build_pipeline(source)
    click.echo(f"   {pipeline.dir}: steps {' → '.join(pipeline.steps)}")
    click.echo(f"   parameters {', '.join(pipeline.parameters)}")

    _title("3/4 run it headless, each step in a fresh kernel")
    # no cache: a promotion needs the run that computed the model, not one that reused it
    run = nb_mlops.run_pipeline(pipeline.dir, cache=False)
    for name, step in run.as_dict()["steps"].items():
        cached = " (cached)" if step.get("cached") else ""
        click.echo(f"   {name:<10} {step['status']:<10} {step.get('duration') or 0:6.2f} s{cached}")
    click.echo(f"   pipeline run {run.run_id}: {run.status}")
    if run.status != "SUCCEEDED":
        raise click.ClickException(f"the pipeline run {run.run_id} failed; see {run.run_dir}")

    _title(f"4/4 promote its model to {model}@champion through the gates")
    try:
        decision = nb_mlops.promote(run.run_id, model=model, reason="make demo")
        click.echo(decision.summary())
    except GatesBlocked as blocked:
        click.echo(str(blocked))
        click.echo("   (blocked: the current champion stays; run `nb-mlops history` to see why)")

    _title(f"lineage of {model}@champion")
    click.echo(nb_mlops.lineage(f"{model}@champion").text())
    click.echo(
        "\nEverything above is in MLflow: `nb-mlops ui` (or `.venv/bin/nb-mlops ui`) serves it on "
        "http://127.0.0.1:5000; `nb-mlops runs`, `nb-mlops data list`, `nb-mlops history "
        f"{model}` print it here."
    )
