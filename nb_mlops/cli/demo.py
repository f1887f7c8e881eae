"""`nb-mlops demo`: the quickstart end to end on the embedded store — tracked, snapshotted,
pipelined, promoted, monitored and retrained — printing what was recorded and how to look at it.

It works from an installed wheel in an empty folder: with no project configuration there it writes
`nb_mlops.toml` (the demo's gates), so the notebook's kernel, the pipeline's kernels and this
process all find the same project root and share one store.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

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

# a check that finds drift retrains the production pipeline and promotes it through the gates
[monitor.policy]
on_drift = "retrain"
auto_promote = true
"""
# the same policy, used when the project configures no monitoring of its own
DEMO_MONITOR = {"policy": {"on_drift": "retrain", "auto_promote": True}}
BATCH = "breast_cancer_batch"  # the shifted batch the loop checks


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
    snapshot), build its pipeline, run it, promote its model through the gates, then close the
    loop: a shifted batch arrives, the monitoring check finds drift, and its policy retrains the
    production pipeline and promotes it through the same gates (or is blocked by them).

    Run it in an empty folder to try nb_mlops: the folder becomes a project (nb_mlops.toml)
    whose store is ./.nb_mlops.

    Example: mkdir try-nb-mlops && cd try-nb-mlops && nb-mlops demo
    """
    from nb_mlops.core.runs import experiment_url, model_url, ui_url

    cfg = _project()
    source = _quickstart(cfg, notebook)
    _execute(source, cfg)
    run = _pipeline(source)
    _promote(run.run_id, model)
    _title(f"lineage of {model}@champion")
    click.echo(_lineage(model))
    checked = _monitor_loop(model, _with_demo_policy(cfg))
    base = ui_url(cfg)
    runs_link = experiment_url(base, run.experiment_id) if run.experiment_id else base
    click.echo(
        f"\nEverything above is in MLflow: `nb-mlops ui` serves it at {base}\n"
        f"   the pipeline's runs: {runs_link}\n"
        f"   the model:           {model_url(base, model)}\n"
        f"In this terminal: `nb-mlops runs`, `nb-mlops data list`, `nb-mlops history {model}`, "
        f"`nb-mlops monitor {model} --data {checked}`."
    )


def _execute(source: Path, cfg: Config) -> None:
    """Step 1: the notebook headless, as papermill runs it; list the snapshots it took."""
    import papermill

    import nb_mlops

    out_dir = cfg.store_dir / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    _title(f"1/6 run {source.name} headless (papermill): %%track and %snapshot record it")
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


def _pipeline(source: Path) -> Any:
    """Steps 2 and 3: build the pipeline from the cell tags, run it headless."""
    import nb_mlops

    _title("2/6 build the pipeline from the notebook's cell tags")
    pipeline = nb_mlops.build_pipeline(source)
    click.echo(f"   {pipeline.dir}: steps {' → '.join(pipeline.steps)}")
    click.echo(f"   parameters {', '.join(pipeline.parameters)}")

    _title("3/6 run it headless, each step in a fresh kernel")
    # no cache: a promotion needs the run that computed the model, not one that reused it
    run = nb_mlops.run_pipeline(pipeline.dir, cache=False)
    for name, step in run.as_dict()["steps"].items():
        cached = " (cached)" if step.get("cached") else ""
        click.echo(f"   {name:<10} {step['status']:<10} {step.get('duration') or 0:6.2f} s{cached}")
    click.echo(f"   pipeline run {run.run_id}: {run.status}")
    if run.status != "SUCCEEDED":
        raise click.ClickException(f"the pipeline run {run.run_id} failed; see {run.run_dir}")
    return run


def _promote(run_id: str, model: str) -> None:
    """Step 4: promote the run's model through the gates (a blocked promotion is shown)."""
    import nb_mlops
    from nb_mlops.cli.promote import blocked_hint

    _title(f"4/6 promote its model to {model}@champion through the gates")
    try:
        decision = nb_mlops.promote(run_id, model=model, reason="nb-mlops demo")
        click.echo(decision.summary())
    except GatesBlocked as blocked:
        click.echo(str(blocked))
        click.echo(f"   {blocked_hint(model)}")


def _lineage(model: str) -> str:
    import nb_mlops

    return str(nb_mlops.lineage(f"{model}@champion").text())


def _with_demo_policy(cfg: Config) -> Config:
    """The project's configuration, with the demo's monitoring policy when it sets none."""
    if "monitor" in cfg.settings:
        return cfg
    return dataclasses.replace(cfg, settings={**cfg.settings, "monitor": DEMO_MONITOR})


def _monitor_loop(model: str, cfg: Config) -> str:
    """Steps 5 and 6: a shifted batch is snapshotted and checked; the policy acts on the drift.

    Returns:
        `NAME@vN` of the batch checked.
    """
    import nb_mlops
    from nb_mlops.core.monitoring import monitor

    _title("5/6 a shifted batch arrives: snapshot it, check the champion against its training data")
    batch = nb_mlops.snapshot(
        _shifted_batch(), BATCH, message="a shifted batch", wait=True, cfg=cfg
    )
    click.echo(f"   data {batch.ref}  {batch.digest[:16]}  rows={batch.rows}")
    result = monitor(model, data=batch.ref, cfg=cfg)
    click.echo(f"   {result.summary()}")
    click.echo(f"   check run {result.run_id}; report {result.report_uri}")

    _title("6/6 the policy acts on the check: retrain the production pipeline, gate, promote")
    for action in result.actions:
        what = action.name + (f" ({action.event})" if action.event else "")
        click.echo(f"   {what:<18} {action.status:<8} {action.detail}")
    retrained = next((a.run_id for a in result.actions if a.name == "retrain" and a.run_id), None)
    if retrained:
        _title("lineage of the retraining run")
        click.echo(_trigger(retrained, cfg))
    if any(a.name == "promote" and a.status == "done" for a in result.actions):
        _title(f"lineage of {model}@champion, retrained")
        click.echo(_lineage(model))
    return str(batch.ref)


def _trigger(run_id: str, cfg: Config) -> str:
    """What the retraining run records about the check that asked for it (its MLflow tags)."""
    from nb_mlops.core import store

    tags = store.client(cfg).get_run(run_id).data.tags
    return "\n".join(
        [
            f"run {run_id} (mode {tags.get('nb_mlops.mode')}, pipeline of "
            f"{tags.get('nb_mlops.production.model')} v{tags.get('nb_mlops.production.version')})",
            f"← triggered by check {tags.get('nb_mlops.monitor.trigger')} "
            f"on {tags.get('nb_mlops.monitor.data')} (reference {tags.get('nb_mlops.monitor.reference')})",
            f"← reason: {tags.get('nb_mlops.monitor.reason')}",
        ]
    )


def _shifted_batch() -> Any:
    """The quickstart's features, every measurement a quarter larger: a new instrument."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns=["target"])
    return (frame.sample(200, random_state=7) * 1.25).reset_index(drop=True)
