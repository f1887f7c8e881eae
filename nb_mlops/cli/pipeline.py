# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""`nb-mlops pipeline build|show|run`: a thin face over `nb_mlops.pipeline`, with live per-step
progress in the terminal (rich) and `--json` output for scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nb_mlops.cli.stopping import interruptible, settle_dead_runs

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
    settle_dead_runs()


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
    import warnings

    from nb_mlops.pipeline import build_pipeline
    from nb_mlops.pipeline.convert import BuildWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BuildWarning)
        spec = build_pipeline(notebook, name=name, output=output)
    for warning in caught:
        if issubclass(warning.category, BuildWarning):
            click.echo(f"warning: {warning.message}", err=True)
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
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
    for note in spec.warnings:
        click.echo(f"warning: {note}", err=True)


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
    params = Table("parameter", "type", "default", "help", title="parameters")
    for pname, entry in spec.parameters.items():
        params.add_row(
            pname,
            escape(str(entry["type"])),
            escape(_default_text(entry)),
            escape(str(entry.get("help") or "")),
        )
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


def _yaml_mapping(text: str | bytes, where: str, hint: str) -> dict[str, Any]:
    """A YAML (or JSON) mapping of parameter values; dates stay text, as papermill reads them."""
    import yaml

    class NoDates(yaml.SafeLoader):
        pass

    NoDates.yaml_implicit_resolvers = {
        first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    try:
        data = yaml.load(text, Loader=NoDates)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{where}: not valid YAML ({exc})", param_hint=hint) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.BadParameter(
            f"{where}: must hold a mapping of parameter names to values", param_hint=hint
        )
    return data


def _read_param_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"{path}: cannot be read ({exc})", param_hint="-f") from exc
    return _yaml_mapping(text, str(path), "-f")


def _pairs(pairs: tuple[str, ...], hint: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE (or NAME VALUE)", param_hint=hint)
        found[key] = value
    return found


class _Given:
    """Parameter values from papermill's sources, in papermill's order (a later one wins):
    -b base64 YAML, -f files, -y YAML text (all typed by YAML), -p text, -r raw text."""

    def __init__(
        self,
        pairs: tuple[str, ...] = (),
        raw: tuple[str, ...] = (),
        files: tuple[Path, ...] = (),
        yamls: tuple[str, ...] = (),
        b64: tuple[str, ...] = (),
    ) -> None:
        import base64
        import binascii

        self.typed: dict[str, Any] = {}
        for text in b64:
            try:
                decoded = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise click.BadParameter(f"{text[:40]!r} is not base64", param_hint="-b") from exc
            self.typed.update(_yaml_mapping(decoded, "the base64 YAML", "-b"))
        for path in files:
            self.typed.update(_read_param_file(path))
        for text in yamls:
            self.typed.update(_yaml_mapping(text, repr(text[:40]), "-y"))
        self.text = _pairs(pairs, "-p")
        self.raw = _pairs(raw, "-r")

    def __bool__(self) -> bool:
        return bool(self.typed or self.text or self.raw)

    def values(self, schema: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The values checked against `schema` (`params.parse_cli_values`)."""
        from nb_mlops.pipeline.params import parse_cli_values

        return parse_cli_values(schema, typed=self.typed, text=self.text, raw=self.raw)


def _params(name: str, given: _Given) -> dict[str, Any]:
    from nb_mlops.pipeline import load_pipeline

    return given.values(load_pipeline(name).parameters)


_PAIR_OPTIONS = ("-p", "--param", "--parameters", "-r", "--parameters_raw")


def _join_pairs(args: list[str]) -> list[str]:
    """papermill's `-p NAME VALUE` → `-p NAME=VALUE`. A first word holding `=` after a name
    is the NAME=VALUE form already; any other first word takes the next word as its value."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        option, first = arg, None
        if arg.startswith("--") and "=" in arg:
            option, _, first = arg.partition("=")
        elif arg[:2] in ("-p", "-r") and len(arg) > 2 and not arg.startswith("--"):
            option, first = arg[:2], arg[2:]
        if option not in _PAIR_OPTIONS:
            out.append(arg)
            i += 1
            continue
        i += 1
        if first is None:
            if i >= len(args):
                out.append(arg)  # click says the option needs a value
                continue
            first, i = args[i], i + 1
        name, sep, _ = first.partition("=")
        if not (sep and name.isidentifier()) and i < len(args):
            first, i = f"{first}={args[i]}", i + 1
        out += [option, first]
    return out


class _RunCommand(click.Command):
    """`run`, reading papermill's spellings of parameter options too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _join_pairs(args))


def _default_text(entry: dict[str, Any]) -> str:
    if "default" in entry:
        return json.dumps(entry["default"])
    if entry.get("computed"):
        return " ".join(str(entry["computed"]).split()) + " (computed)"
    return "(unset)"


def _help_notebook(name: str) -> None:
    """papermill's --help-notebook, for a pipeline: its parameters with type, default and help."""
    from nb_mlops.pipeline import load_pipeline

    spec = load_pipeline(name)
    click.echo(f"Parameters of pipeline {spec.name!r} (from {spec.notebook_path}):")
    if not spec.parameters:
        click.echo("\n  none: the notebook has no `parameters` cell")
    for pname, entry in spec.parameters.items():
        line = f"  {pname}: {entry['type']} (default {_default_text(entry)})"
        help_text = entry.get("help") or ""
        if help_text and len(line) > 33:
            line += "\n" + " " * 34 + help_text
        elif help_text:
            line = f"{line:<34}{help_text}"
        click.echo(line)


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


def _data_pins(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    """`--data NAME=OTHER@vN` / `--data NAME@vN` (repeatable) → {NAME: OTHER@vN}, or None."""
    from nb_mlops.core.data.pins import parse_pin
    from nb_mlops.core.errors import DataError

    pins: dict[str, str] = {}
    for text in value:
        try:
            name, ref = parse_pin(text)
        except DataError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
        if pins.get(name, ref) != ref:
            raise click.BadParameter(f"{name} is pinned twice", ctx=ctx, param=param)
        pins[name] = ref
    return pins or None


@pipeline.command(cls=_RunCommand)
@click.argument("name", required=False)
@click.option(
    "-p",
    "--param",
    "--parameters",
    "pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter value (repeatable; papermill's `-p NAME VALUE` works too). Text is "
    "converted to the declared type where lossless; an untyped parameter reads it as papermill "
    "does (True/False/None, int, float, else text).",
)
@click.option(
    "-r",
    "--parameters_raw",
    "raw",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter value kept as text when the parameter is untyped (repeatable).",
)
@click.option(
    "-f",
    "--params-file",
    "--parameters_file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A YAML or JSON file of parameter values (repeatable).",
)
@click.option(
    "-y", "--parameters_yaml", "yamls", multiple=True, help="YAML text of parameter values."
)
@click.option(
    "-b",
    "--parameters_base64",
    "b64",
    multiple=True,
    help="Base64-encoded YAML text of parameter values.",
)
@click.option(
    "--help-notebook",
    is_flag=True,
    help="List the pipeline's parameters (type, default, help) and exit.",
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
@click.option(
    "--cell-timeout",
    "--execution-timeout",
    "cell_timeout",
    type=float,
    help="Seconds a single cell may take.",
)
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
@click.option(
    "--data",
    multiple=True,
    metavar="NAME=OTHER@vN",
    callback=_data_pins,
    help="Pin a snapshot (repeatable): the steps' restore(NAME) / %restore NAME read OTHER@vN "
    "instead of the latest NAME; `--data NAME@vN` pins NAME to version N. Checked before any "
    "step starts; recorded on the run (tag nb_mlops.data_pins) and part of the step cache key.",
)
def run(
    name: str | None,
    help_notebook: bool,
    production: str | None,
    promote: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Run pipeline NAME (a name under pipelines/, or a folder): DAG order, independent steps in
    parallel, unchanged steps from the cache, everything tracked in MLflow.

    Exit status 1 when a step fails; the message names the step and the cell. The parameter
    options are papermill's (-p NAME VALUE, -r, -f, -y, -b, --help-notebook, --execution-timeout):
    a papermill command's options work unchanged; values are checked against the declared types
    before anything runs. --data re-points the steps' `restore(NAME)` to another snapshot version.

    \b
    nb-mlops pipeline run train -p C=0.5 -f params.yaml --max-parallel 2
    nb-mlops pipeline run train -p C 0.5 -y 'cols: [a, b]'
    nb-mlops pipeline run train --data train=batch@v3
    nb-mlops pipeline run --production churn --data train@v2
    nb-mlops pipeline run train --resume 3f2a... --json
    """
    given = _Given(*(options.pop(key) for key in ("pairs", "raw", "files", "yamls", "b64")))
    if help_notebook:
        if not name:
            raise click.UsageError("--help-notebook lists the parameters of pipeline NAME")
        _help_notebook(name)
        return
    if production:
        executor, data = options["executor"], options["data"]
        _run_production(production, name, given, executor, promote, as_json, data)
        return
    if promote:
        raise click.UsageError("--promote goes with --production MODEL")
    if not name:
        raise click.UsageError("give a pipeline NAME (or folder), or --production MODEL")
    options["cache"] = not options.pop("no_cache")
    _run_local(name, given, as_json, **options)


def _run_local(name: str, given: _Given, as_json: bool, **options: Any) -> None:
    """Run pipeline `name` with a live progress display; `options` go to `run_pipeline`."""
    from nb_mlops.pipeline import run_pipeline

    values = _params(name, given) if given else None
    progress = _Progress(quiet=as_json)
    try:
        result = run_pipeline(name, values, progress=progress, **options)
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
    given: _Given,
    executor: str,
    promote: bool,
    as_json: bool,
    data: dict[str, str] | None = None,
) -> None:
    from nb_mlops.pipeline import load_pipeline
    from nb_mlops.pipeline.production import fetch_production_pipeline, run_production

    values = None
    if given:  # checked against the stored pipeline before anything runs
        folder, _ = fetch_production_pipeline(model)
        values = given.values(load_pipeline(folder).parameters)
    result = run_production(
        model, values, executor=executor, promote=promote, from_strings=False, data=data
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        click.echo(str(result.as_dict()))
    if result.status == "FAILED":
        from nb_mlops.core.errors import StepFailed

        raise StepFailed(f"production run of {model!r} failed")


interruptible(run)
