# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""`nb-mlops pipeline build|show|run`: a thin face over `nb_mlops.pipeline`, with live per-step
progress in the terminal (rich) and `--json` output for scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

STATUS_STYLE = {
    "QUEUED": "dim",
    "RUNNING": "yellow",
    "SUCCEEDED": "green",
    "FAILED": "bold red",
    "CANCELLED": "magenta",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def pipeline() -> None:
    """Build, show and run notebook pipelines.

    \b
    nb-mlops pipeline build train.ipynb
    nb-mlops pipeline show train
    nb-mlops pipeline run train -p C=0.5 -p n_features=10
    """


@pipeline.command()
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-n", "--name", help="Pipeline name (default: the notebook's stem).")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: pipelines/NAME under the project root).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline description as JSON.")
def build(notebook: Path, name: str | None, output: Path | None, as_json: bool) -> None:
    """Convert NOTEBOOK into a pipeline: pipeline.yaml plus one papermill notebook per step.

    Steps come from Kale's cell tags (step:NAME, prev:NAME, imports, functions, parameters,
    skip, pipeline-metrics) or `%%step NAME --after A` lines; values passed between steps are
    found by def-use analysis.
    """
    from nb_mlops.pipeline import build_pipeline

    spec = build_pipeline(notebook, name=name, output=output)
    if as_json:
        click.echo(json.dumps({**spec.as_dict(), "dir": str(spec.dir)}, indent=2))
        return
    from nb_mlops.pipeline.convert import describe_inputs

    order = " → ".join(spec.steps)
    click.echo(f"built pipeline {spec.name!r} in {spec.dir}")
    click.echo(f"  steps ({len(spec.steps)}): {order}")
    click.echo(f"  parameters ({len(spec.parameters)}): " + (", ".join(spec.parameters) or "-"))
    for step in spec.steps.values():
        after = f" (after {', '.join(step.after)})" if step.after else ""
        received = describe_inputs(step)
        click.echo(f"  step {step.name}{after} receives" + (" nothing" if not received else ":"))
        for line in received:
            click.echo(f"    {line}")
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)


def _files_read(spec: Any) -> dict[str, list[str]]:
    """The files each step read in the pipeline's latest run (from its state file)."""
    from nb_mlops.core.config import load_config

    folder = load_config().runs_dir / spec.name
    states = sorted(folder.glob("*/state.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        markers = json.loads(states[-1].read_text()).get("markers", {})
    except (OSError, ValueError):
        return {}
    return {step: sorted(m.get("reads", {})) for step, m in markers.items() if m.get("reads")}


@pipeline.command()
@click.argument("name")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the description (schema, steps) as JSON."
)
def show(name: str, as_json: bool) -> None:
    """Show pipeline NAME: its typed parameters and its steps with their edges and values."""
    from rich.console import Console
    from rich.table import Table

    from nb_mlops.pipeline import load_pipeline

    spec = load_pipeline(name)
    reads = _files_read(spec)
    if as_json:
        data = {**spec.as_dict(), "dir": str(spec.dir)}
        for step in data["steps"]:
            step["files_read"] = reads.get(step["name"], [])
        click.echo(json.dumps(data, indent=2))
        return
    from rich.markup import escape

    from nb_mlops.pipeline.convert import describe_inputs

    console = Console()
    console.print(
        f"[bold]{escape(spec.name)}[/] from {escape(str(spec.notebook_path))}", highlight=False
    )
    params = Table("parameter", "type", "default", title="parameters")
    for pname, entry in spec.parameters.items():
        params.add_row(pname, escape(str(entry["type"])), escape(json.dumps(entry["default"])))
    console.print(params)
    steps = Table("step", "after", "receives", "outputs", "cells", title="steps")
    for step in spec.steps.values():
        steps.add_row(
            step.name,
            ", ".join(step.after),
            escape("\n".join(describe_inputs(step))),
            ", ".join(step.outputs),
            ", ".join(map(str, step.cells)),
        )
    console.print(steps)
    if reads:
        files = Table("step", "file", title="files read (latest run)")
        for step_name, paths in reads.items():
            for path in paths:
                files.add_row(step_name, escape(path))
        console.print(files)
    for warning in spec.warnings:
        console.print(f"warning: {escape(warning)}", style="yellow", highlight=False)


def _read_param_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{path}: cannot be read ({exc})", param_hint="-f") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.BadParameter(
            f"{path}: must hold a mapping of parameter names to values", param_hint="-f"
        )
    return data


def _params(name: str, pairs: tuple[str, ...], file: Path | None) -> dict[str, Any]:
    """-f values (typed by YAML/JSON) overlaid with -p k=v strings (coerced losslessly)."""
    from nb_mlops.pipeline import load_pipeline
    from nb_mlops.pipeline.params import validate

    cli: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-p")
        cli[key] = value
    schema = load_pipeline(name).parameters
    values = validate(schema, _read_param_file(file)) if file else {}
    from_cli = validate(schema, cli, from_strings=True)
    values.update({k: from_cli[k] for k in cli})
    return values


class _Progress:
    """Live per-step table on a terminal; plain lines on stderr otherwise."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live: Any = None
        self.seen: dict[str, str] = {}
        if not quiet and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=8, transient=False)
            self.live.start()

    def __call__(self, snap: dict[str, Any]) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(self._table(snap))
            return
        for step, state in snap["steps"].items():
            status = state["status"]
            if self.seen.get(step) != status:
                self.seen[step] = status
                extra = " (cached)" if state["cached"] else ""
                if state["duration"] is not None and status != "RUNNING":
                    extra += f" {state['duration']:.2f}s"
                self.console.print(
                    f"{step:<20} {status}{extra}", style=STATUS_STYLE.get(status), highlight=False
                )

    def _table(self, snap: dict[str, Any]) -> Any:
        from rich.table import Table

        table = Table(
            "step",
            "status",
            "duration",
            "cell",
            title=f"{snap['pipeline']} · {snap['run_id'][:8]} · {snap['status']}",
        )
        for step, state in snap["steps"].items():
            status = state["status"] + (" (cached)" if state["cached"] else "")
            duration = "" if state["duration"] is None else f"{state['duration']:.2f}s"
            table.add_row(
                step,
                f"[{STATUS_STYLE.get(state['status'], '')}]{status}[/]",
                duration,
                state["cell"] or "",
            )
        return table

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


@pipeline.command()
@click.argument("name", required=False)
@click.option(
    "-p",
    "--param",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter value (repeatable); text is converted to the declared type where lossless.",
)
@click.option(
    "-f",
    "--params-file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A YAML or JSON file of parameter values.",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="local, or dask://HOST:PORT for an existing Dask cluster.",
)
@click.option(
    "--max-parallel", type=click.IntRange(min=1), help="Steps run at once (default: CPU count)."
)
@click.option(
    "--no-cache", is_flag=True, help="Run every step even if an identical earlier run exists."
)
@click.option(
    "--resume",
    metavar="RUN_ID",
    help="Re-run only the failed (and not run) steps of pipeline run RUN_ID.",
)
@click.option(
    "--timeout", type=float, help="Watchdog: seconds a step may take before its kernel is killed."
)
@click.option("--cell-timeout", type=float, help="Seconds a single cell may take.")
@click.option(
    "--status-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep this JSON file up to date with the run's status.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON (run_id, status, steps)."
)
@click.option(
    "--production",
    metavar="MODEL",
    help="Run MODEL's promoted (production) pipeline version instead.",
)
@click.option(
    "--promote", is_flag=True, help="With --production: promote the run's model if the gates pass."
)
def run(
    name: str | None,
    pairs: tuple[str, ...],
    file: Path | None,
    executor: str,
    max_parallel: int | None,
    no_cache: bool,
    resume: str | None,
    timeout: float | None,
    cell_timeout: float | None,
    status_file: Path | None,
    as_json: bool,
    production: str | None,
    promote: bool,
) -> None:
    """Run pipeline NAME (a name under pipelines/, or a folder): DAG order, independent steps in
    parallel, unchanged steps from the cache, everything tracked in MLflow.

    Exit status 1 when a step fails; the message names the step and the cell.

    \b
    nb-mlops pipeline run train -p C=0.5 -f params.yaml --max-parallel 2
    nb-mlops pipeline run train --resume 3f2a... --json
    """
    if production:
        _run_production(production, name, pairs, file, executor, promote, as_json)
        return
    if promote:
        raise click.UsageError("--promote goes with --production MODEL")
    if not name:
        raise click.UsageError("give a pipeline NAME (or folder), or --production MODEL")
    from nb_mlops.pipeline import run_pipeline

    values = _params(name, pairs, file) if (pairs or file) else None
    progress = _Progress(quiet=as_json)
    try:
        result = run_pipeline(
            name,
            values,
            executor=executor,
            max_parallel=max_parallel,
            cache=not no_cache,
            resume=resume,
            timeout=timeout,
            cell_timeout=cell_timeout,
            status_file=status_file,
            progress=progress,
        )
    finally:
        progress.stop()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        cached = sum(1 for s in result.steps.values() if s.cached)
        click.echo(
            f"{result.status}: pipeline {result.pipeline!r} run {result.run_id} "
            f"({len(result.steps)} steps, {cached} cached, {result.duration or 0:.2f}s)"
        )
        for key, value in sorted(result.metrics.items()):
            click.echo(f"  {key} = {value:g}")
    if not result.succeeded:
        from nb_mlops.core.errors import StepFailed

        failed = [s.error for s in result.steps.values() if s.status == "FAILED" and s.error]
        for error in failed[1:]:
            click.echo(f"error: {error}", err=True)
        # `main()` prints the first failure as `error: ...` and exits with status 1
        raise StepFailed(failed[0] if failed else f"pipeline run {result.run_id} failed")


def _run_production(
    model: str,
    name: str | None,
    pairs: tuple[str, ...],
    file: Path | None,
    executor: str,
    promote: bool,
    as_json: bool,
) -> None:
    try:
        from nb_mlops.pipeline.production import run_production  # owned by the promotion helper
    except ImportError as exc:
        raise click.ClickException(
            f"production runs are not available in this installation ({exc}); "
            "nb_mlops.pipeline.production is missing"
        ) from exc
    params: dict[str, Any] = dict(_read_param_file(file)) if file else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-p")
        params[key] = value
    result = run_production(model, params or None, executor=executor, promote=promote)
    as_dict = getattr(result, "as_dict", None)
    if as_json:
        click.echo(json.dumps(as_dict() if as_dict else result, indent=2, default=str))
    else:
        click.echo(str(as_dict() if as_dict else result))
    status = (as_dict() if as_dict else {}).get("status") if as_dict else None
    if status == "FAILED":
        from nb_mlops.core.errors import StepFailed

        raise StepFailed(f"production run of {model!r} failed")
