"""`nb-mlops demo`: the quickstart end to end on the embedded store — tracked, snapshotted,
pipelined, promoted — printing what was recorded and how to look at it.

It works from an installed wheel in an empty folder: with no project configuration there it writes
`nb_mlops.toml` (the demo's gates), so the notebook's kernel, the pipeline's kernels and this
process all find the same project root and share one store.
"""

from __future__ import annotations

import logging
import os
import shutil
from importlib.resources import files
from pathlib import Path

import click

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import GatesBlocked

# the gates the quickstart is judged by (the repository's own [tool.nb_mlops] holds the same)
DEMO_CONFIG = """\
# written by `nb-mlops demo`: this folder is an nb_mlops project; its store is ./.nb_mlops
reproduce_tolerance = 1e-6

[gates]
metrics = { accuracy = ">= 0.9", log_loss = "<= 0.3" }
beat_champion = { metric = "accuracy", min_delta = 0.0 }
require_reproduced = true
require_data_verified = true
"""


def _project() -> Config:
    """The project to run in: the current one, or this folder made one (`nb_mlops.toml`)."""
    cfg = load_config()
    if cfg.config_file is None:
        (cfg.root / "nb_mlops.toml").write_text(DEMO_CONFIG)
        click.echo(f"   wrote {cfg.root / 'nb_mlops.toml'}: this folder is the project root")
        cfg = load_config()
    # every kernel the demo starts resolves this root, whatever its working folder
    os.environ["NB_MLOPS_ROOT"] = str(cfg.root)
    return cfg


def _packaged_quickstart() -> Path:
    """The quickstart shipped in the wheel, else (a source checkout) the repository's copy."""
    packaged = files("nb_mlops").joinpath("examples", "quickstart.ipynb")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def _quickstart(cfg: Config, notebook: str | None) -> Path:
    """The quickstart notebook: the given one, the project's, or a copy of the packaged one."""
    if notebook:
        return Path(notebook).resolve()
    own = cfg.root / "notebooks" / "quickstart.ipynb"
    if own.is_file():
        return own
    own.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_packaged_quickstart(), own)
    return own


def _patient_kernel_manager() -> type:
    """A kernel manager that lets the kernel finish persisting what it tracked when it is shut
    down (its background writer flushes at exit; the default allows it 5 s, then kills it)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Float

    class PatientKernelManager(AsyncKernelManager):
        shutdown_wait_time = Float(120.0, config=True)

    return PatientKernelManager


def _title(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


@click.command()
@click.option(
    "--notebook",
    type=click.Path(exists=True, dir_okay=False),
    help="Default: notebooks/quickstart.ipynb (copied there from the package when missing).",
)
@click.option("--model", default="breast-cancer", show_default=True, help="Registered model name.")
def demo(notebook: str | None, model: str) -> None:
    """Run the quickstart end to end: execute the notebook headless (a tracked run and a data
    snapshot), build its pipeline, run it, promote its model through the gates, print lineage.

    Run it in an empty folder to try nb_mlops: the folder becomes a project (nb_mlops.toml)
    whose store is ./.nb_mlops.

    Example: mkdir try-nb-mlops && cd try-nb-mlops && nb-mlops demo
    """
    import papermill

    import nb_mlops
    from nb_mlops.cli.promote import blocked_hint
    from nb_mlops.core.runs import experiment_url, model_url, ui_url

    cfg = _project()
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
        kernel_manager_class=_patient_kernel_manager(),
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
        decision = nb_mlops.promote(run.run_id, model=model, reason="nb-mlops demo")
        click.echo(decision.summary())
    except GatesBlocked as blocked:
        click.echo(str(blocked))
        click.echo(f"   {blocked_hint(model)}")

    _title(f"lineage of {model}@champion")
    click.echo(nb_mlops.lineage(f"{model}@champion").text())
    base = ui_url(cfg)
    runs_link = experiment_url(base, run.experiment_id) if run.experiment_id else base
    click.echo(
        f"\nEverything above is in MLflow: `nb-mlops ui` serves it at {base}\n"
        f"   the pipeline's runs: {runs_link}\n"
        f"   the model:           {model_url(base, model)}\n"
        f"In this terminal: `nb-mlops runs`, `nb-mlops data list`, `nb-mlops history {model}`."
    )
