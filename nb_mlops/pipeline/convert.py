# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""Build a pipeline from a notebook: `pipeline.yaml` plus one plain papermill notebook per step
(parameters cell, setup, the `imports`/`functions` cells, a loader of upstream values with the
imports and settings the step repeats, the step's cells, a saver). Deterministic: the same
notebook gives byte-identical files.
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import nbformat

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import BuildError
from nb_mlops.pipeline.analysis import Plan, StepPlan, analyze_source, plan_steps
from nb_mlops.pipeline.grammar import DEFAULT_STEP, Cell, Grammar, StepDecl, parse_cells
from nb_mlops.pipeline.params import read_parameters
from nb_mlops.pipeline.spec import Pipeline, StepSpec, _write_if_changed, write_spec

__all__ = ["BuildWarning", "build_pipeline", "describe_inputs", "pipeline_name"]

# Steps run in the python3 kernel of the environment nb_mlops runs in, whatever Python kernel
# the notebook names: their setup and saver cells import nb_mlops, and a pipeline runs where
# the notebook's own kernel may not be installed (CI, a Dask worker).
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
_PYTHON = re.compile(r"i?python\d*", re.IGNORECASE)


class BuildWarning(UserWarning):
    """The notebook builds, but a run will stop early (a cell that is not valid Python)."""


def pipeline_name(notebook: Path) -> str:
    """The default pipeline name: the notebook's stem, lower-cased, other characters as `_`."""
    return re.sub(r"[^a-z0-9_-]+", "_", notebook.stem.lower()).strip("_") or "pipeline"


def _code(source: str, tags: list[str] | None = None, source_cell: int | None = None) -> Any:
    # built directly: nbformat's new_code_cell validates every cell (writes() validates once)
    cell = nbformat.NotebookNode(
        cell_type="code",
        execution_count=None,
        metadata=nbformat.NotebookNode(),
        outputs=[],
        source=source,
    )
    if tags:
        cell.metadata["tags"] = tags
    if source_cell is not None:
        cell.metadata["nb_mlops"] = {"source_cell": source_cell}
    return cell


def _check_kernel(nb: Any, path: Path) -> None:
    """Refuse a notebook whose kernel is not Python: the steps' own cells are Python."""
    meta = nb.get("metadata", {})
    spec = meta.get("kernelspec") or {}
    name = str(spec.get("name") or "")
    language = str(spec.get("language") or (meta.get("language_info") or {}).get("name") or "")
    if not language and name:
        try:
            from jupyter_client.kernelspec import KernelSpecManager

            language = str(KernelSpecManager().get_kernel_spec(name).language)
        except Exception:  # not installed here: nothing says it is not Python
            language = ""
    if language and not _PYTHON.fullmatch(language):
        raise BuildError(
            f"{path}: the notebook runs in kernel {name or '?'!r} (language {language!r}); "
            "pipeline steps run in a Python kernel: convert the notebook to Python, or run it "
            "with papermill"
        )


def _imports_for_parameters(grammar: Grammar, params: list[Cell], needs: list[str]) -> list[str]:
    """The import lines the parameters cell needs from cells above it (each step runs the
    parameters cell first, so it repeats them, as imports that cross steps are repeated).

    Raises:
        BuildError: the cell uses a name that a cell above it binds by other means than import.
    """
    if not params or not needs:
        return []
    first = params[0]
    found: dict[str, tuple[str | None, Cell]] = {}  # the last binding above the parameters cell
    for cell in grammar.cells:
        if cell.index >= first.index or cell.role == "parameters":
            continue
        try:
            stmts = analyze_source(cell.source, cell.ref)
        except BuildError:
            continue  # fails when it runs: reported as a problem of the notebook
        for stmt in stmts:
            for name in stmt.binds | stmt.maybe_binds:
                imported = stmt.imports.get(name)
                found[name] = (imported[0] if imported else None, cell)
    lines: list[str] = []
    for name in needs:
        if name not in found:
            continue
        line, where = found[name]
        if line is None:
            raise BuildError(
                f"{first.ref}: the parameters cell uses `{name}`, which {where.ref} above it "
                "defines; every step runs the parameters cell first: define or import "
                f"`{name}` in the parameters cell"
            )
        lines.append(line)
    return list(dict.fromkeys(lines))


def _parameters_source(sources: list[str], imports: list[str]) -> str:
    """The step notebooks' `parameters` cell: the notebook's parameters cell as written (papermill
    runs it too: computed defaults, magics, prints), then the runner's own three names."""
    lines: list[str] = []
    if imports:
        lines += ["# imported above the parameters cell in the notebook:", *imports, ""]
    for source in sources:
        lines += [source.rstrip("\n"), ""]
    lines += [
        "# Set by the runner (its context, base64 JSON) or, for a plain papermill run, by you:",
        "# nb_mlops_inputs = a run's values folder, nb_mlops_outputs = where this step saves.",
        'nb_mlops_context = ""',
        'nb_mlops_inputs = ""',
        'nb_mlops_outputs = ""',
    ]
    return "\n".join(lines)


def _parameter_cells(params: list[Cell], imports: list[str]) -> list[Any]:
    """The parameters cell of every step (a cell-magic parameters cell stays a cell of its own:
    its magic must be its first line)."""
    magic = [c for c in params if c.source.lstrip().startswith("%%")]
    plain = [c.source for c in params if c not in magic]
    cells = [_code(c.source, None, c.index + 1) for c in magic]
    return [*cells, _code(_parameters_source(plain, imports), ["parameters"])]


def describe_inputs(step: StepPlan | Any) -> list[str]:
    """One line per value a step receives, `name ← producer (why)`, per file it shares with
    an earlier step, `file PATH (why)`, and per step it waits for around a shell command."""
    reasons = getattr(step, "reasons", {}) or {}
    unchanged = getattr(step, "unchanged", {}) or {}
    lines = []
    for name, producer in step.inputs.items():
        why = [reasons[name]] if reasons.get(name) else []
        if name in unchanged:
            why.append(f"{unchanged[name]}: checked unchanged at the step's end")
        lines.append(f"{name} ← {producer}" + (f" ({'; '.join(why)})" if why else ""))
    for key, why in reasons.items():
        if key.startswith("file:"):
            lines.append(f"file `{key[5:]}` ({why})")
        elif key.startswith("shell:"):
            lines.append(f"after step {key[6:]} ({why})")
    return lines


def _step_notebook(
    name: str, source_rel: str, step: StepPlan, grammar: Grammar, plan: Plan, parameters: list[Any]
) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python"},
        "nb_mlops": {"pipeline": name, "step": step.name, "source": source_rel},
    }
    cells = [
        nbformat.v4.new_markdown_cell(
            f"# Step `{step.name}` of pipeline `{name}`\n\n"
            f"Generated by `nb-mlops pipeline build` from `{source_rel}`: edit that notebook, "
            "not this file."
        ),
        *copy.deepcopy(parameters),
    ]
    prelude = [c for c in grammar.cells if c.role in ("imports", "functions")]
    extra = f", prelude={len(prelude)}" if prelude and plan.prelude_defines else ""
    setup = (
        "from nb_mlops.pipeline import kernel as _nb_mlops_kernel\n\n"
        f"_nb_mlops_step = _nb_mlops_kernel.setup(\n    globals(), {step.name!r}, "
        f"nb_mlops_context, nb_mlops_inputs, nb_mlops_outputs{extra}\n)"
    )
    if plan.uses_magics:
        setup += "\n%load_ext nb_mlops"
    loader = ""
    if step.inputs or step.imports or step.replay:
        lines = [*step.imports.values(), *step.replay]
        unchanged = f", unchanged={sorted(step.unchanged)!r}" if step.unchanged else ""
        lines.append(f"_nb_mlops_step.load(globals(), {step.inputs!r}{unchanged})")
        loader = "\n".join(lines)
    if loader and not prelude:
        # nothing runs between them: one cell (a kernel round trip less per step)
        cells.append(_code(f"{setup}\n{loader}", ["nb_mlops-setup", "nb_mlops-loader"]))
    else:
        cells.append(_code(setup, ["nb_mlops-setup"]))
        for cell in prelude:
            cells.append(_code(cell.source, [cell.role], cell.index + 1))
        if loader:
            cells.append(_code(loader, ["nb_mlops-loader"]))
    for cell in step.cells:
        cells.append(_code(cell.source, None, cell.index + 1))
    paths = sorted(step.paths)
    extra = f", paths={paths!r}" if paths else ""
    cells.append(
        _code(
            f"_nb_mlops_step.save(globals(), {step.outputs!r}, {step.metrics!r}{extra})",
            ["nb_mlops-saver"],
        )
    )
    for index, cell in enumerate(cells):
        cell.id = f"c{index}"
    nb.cells = cells
    return nb


def _read_notebook(path: Path) -> tuple[bytes, Any]:
    """The notebook's bytes (hashed into the spec) and its content."""
    if not path.is_file():
        raise BuildError(f"notebook {str(path)!r} not found")
    raw = path.read_bytes()
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as exc:
        raise BuildError(f"{path}: not a readable notebook ({exc})") from exc
    return raw, nb


def _read_parameters(params: list[Cell]) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """The schema of the parameters cells, their problems, and the names they need from above."""
    schema: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    needs: list[str] = []
    for cell in params:
        read = read_parameters(cell.source, cell.ref)
        schema.update(read.schema)
        problems += read.problems
        needs += [n for n in read.needs if n not in needs and not hasattr(builtins, n)]
    return schema, problems, needs


def _warn(path: Path, problems: list[str]) -> None:
    for problem in problems:
        warnings.warn(
            f"{path}: {problem}; a run stops at that cell with this error, as under papermill",
            BuildWarning,
            stacklevel=3,  # the caller of build_pipeline
        )


def _write_steps(
    out: Path, name: str, source_rel: str, grammar: Grammar, plan: Plan, parameters: list[Any]
) -> dict[str, StepSpec]:
    """Write one notebook per step (dropping those of steps that are gone); their specs."""
    steps: dict[str, StepSpec] = {}
    for step in plan.steps.values():
        rel = f"steps/{step.name}.ipynb"
        step_nb = _step_notebook(name, source_rel, step, grammar, plan, parameters)
        _write_if_changed(out / rel, nbformat.writes(step_nb).encode() + b"\n")
        steps[step.name] = StepSpec(
            name=step.name,
            notebook=rel,
            after=list(step.after),
            inputs=dict(step.inputs),
            outputs=list(step.outputs),
            metrics=list(step.metrics),
            cells=[c.index + 1 for c in step.cells],
            reasons=dict(step.reasons),
        )
    for stale in (out / "steps").glob("*.ipynb"):
        if stale.stem not in steps:
            stale.unlink()
    return steps


def build_pipeline(
    notebook: str | os.PathLike[str],
    name: str | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    cfg: Config | None = None,
) -> Pipeline:
    """Convert a notebook into a pipeline folder.

    Args:
        notebook: the source `.ipynb`.
        name: the pipeline name (default: the notebook's stem).
        output: the folder to write (default: `<project root>/pipelines/<name>`).
        cfg: the project configuration (default: found from the notebook's folder).

    Returns:
        The built `Pipeline` (as `load_pipeline` would read it).

    Raises:
        BuildError: the notebook cannot be converted; the message names the cell.

    Example:
        >>> spec = build_pipeline("train.ipynb")        # doctest: +SKIP
        >>> [s for s in spec.steps]                      # doctest: +SKIP
        ['load', 'features', 'train', 'evaluate']
    """
    path = Path(notebook)
    raw, nb = _read_notebook(path)
    cfg = cfg or load_config(path.resolve().parent)
    name = name or pipeline_name(path)
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z", name):
        raise BuildError(f"pipeline name {name!r} is not valid; use letters, digits, '_', '-', '.'")
    out = Path(output) if output else cfg.root / "pipelines" / name
    _check_kernel(nb, path)
    grammar = parse_cells(nb)
    params = grammar.role("parameters")
    schema, problems, needs = _read_parameters(params)
    if not grammar.steps:  # papermill runs such a notebook: here, one step applies the parameters
        grammar.steps[DEFAULT_STEP] = StepDecl(DEFAULT_STEP)
    plan = plan_steps(grammar)
    refs = tuple(f"{c.ref}:" for c in params)
    _warn(path, problems + [p for p in plan.problems if not p.startswith(refs)])
    parameters = _parameter_cells(params, _imports_for_parameters(grammar, params, needs))
    (out / "steps").mkdir(parents=True, exist_ok=True)
    source_rel = Path(os.path.relpath(path.resolve(), out.resolve())).as_posix()
    steps = _write_steps(out, name, source_rel, grammar, plan, parameters)
    pipeline = Pipeline(
        dir=out.resolve(),
        name=name,
        notebook=source_rel,
        notebook_sha256=hashlib.sha256(raw).hexdigest(),
        parameters=schema,
        metrics=list(plan.metrics),
        steps=steps,
        warnings=list(plan.warnings),
    )
    write_spec(pipeline)
    return pipeline
