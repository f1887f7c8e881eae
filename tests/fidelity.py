"""Differential runs of a notebook: top to bottom in one namespace, and as its pipeline (each step
with its own namespace, values passed through the step notebooks' loader and saver), compared
cell by cell: printed output, the error raised, and the final value of every name the cell
changed (a digest of its pickle, or its repr for what pickle refuses).

The fast path (`WarmKernel`) runs both ways in one long-lived python3 kernel, reset between runs,
each run's cells inside one kernel request through `InteractiveShell.run_cell` (the code path of
an execute request, with its input transformations and events, minus the messaging):
the user namespace is put back to a new kernel's, and the process-wide state a fresh kernel would not have is put
back (environment variables, working folder, `sys.path`, warnings filters, pandas and
matplotlib options, numpy's error handling and print options, the decimal context, the
recursion limit, IPython event callbacks), and the global random generators are reseeded from
the OS, as in a new process. It runs the generated step notebooks' own cells (parameters, a
stand-in for papermill's injected context, setup, imports/functions, loader, the step's cells,
saver) against real value files. It does not exercise what only a new process gives: C-level
state of extension modules, import-time side effects (modules stay imported), threads or signal
handlers left behind, nor the runner itself (kernel start, papermill, scheduling, the cache,
MLflow). `run_real` covers those: papermill top to bottom in a fresh kernel against
`run_pipeline(cache=False)`, comparing printed output and metrics.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from nb_mlops.core.errors import BuildError
from nb_mlops.pipeline import build_pipeline, load_pipeline
from nb_mlops.pipeline.kernel import DONE_FILE, encode_context
from tests.kernel_noise import strip_kernel_noise
from tests.nbutil import Cell, new_notebook

REPO = Path(__file__).resolve().parents[1]

# Runs inside the kernel once: the probe (digests of the user's names) and the reset.
_HELPER = r'''
import hashlib, io, os, pickle, re, sys, types, warnings
_ENV = dict(os.environ)
_CWD = os.getcwd()
_PATH = list(sys.path)
_FILTERS = list(warnings.filters)
_shell = get_ipython()
_CALLBACKS = {k: list(v) for k, v in _shell.events.callbacks.items()}
_HIDDEN = set(_shell.user_ns_hidden) | {"_nb_fid"}
_INITIAL = dict(_shell.user_ns)
_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")

class _Canonical(pickle.Pickler):
    """Pickles arrays and frames by their values, not their memory layout (contiguity, pandas
    blocks), which may differ after a round trip without any value differing."""

    def reducer_override(self, obj):
        module = type(obj).__module__ or ""
        if module.startswith("numpy") and type(obj).__name__ == "ndarray":
            import numpy as np
            data = obj.tolist() if obj.dtype == object else np.ascontiguousarray(obj).tobytes()
            return (tuple, (("ndarray", obj.dtype.str, obj.shape, data),))
        if module.startswith("pandas") and type(obj).__name__ in ("DataFrame", "Series"):
            frame = obj.to_frame() if type(obj).__name__ == "Series" else obj
            cols = [(str(c), str(frame[c].dtype), frame[c].tolist()) for c in frame.columns]
            return (tuple, ((type(obj).__name__, frame.index.tolist(), cols),))
        if module == "__main__" and not isinstance(obj, type):
            # an object of a notebook class, by its class's name and its state (the class object
            # itself may be a step's copy of it: compared by what it holds, not by reference)
            parts = [type(obj).__qualname__, getattr(obj, "__dict__", None)]
            if isinstance(obj, dict):
                parts.append(list(obj.items()))
            elif isinstance(obj, list | tuple | set | frozenset):
                parts.append(list(obj))
            return (tuple, (tuple(parts),))
        return NotImplemented

def _state(value):
    """What a notebook class or function holds besides its code: class attributes that are not
    functions, a function's attributes and defaults; by repr, in name order (a step's copy of a
    class gets its attributes in another order, and as other string objects)."""
    if isinstance(value, type):
        held = sorted((k, v) for k, v in vars(value).items()
                      if not k.startswith("__") and not callable(v)
                      and not isinstance(v, (staticmethod, classmethod, property)))
    else:
        held = (sorted(value.__dict__.items()), value.__defaults__, value.__kwdefaults__)
    return hashlib.sha256(_ADDR.sub("", repr(held)).encode()).hexdigest()[:16]

def _digest(value):
    if isinstance(value, types.ModuleType):
        return None
    if isinstance(value, types.FunctionType | type):
        own = getattr(value, "__module__", None) == "__main__"
        return f"{type(value).__name__}:{value.__qualname__}" + (f":{_state(value)}" if own else "")
    try:
        out = io.BytesIO()
        _Canonical(out, protocol=4).dump(value)
        return hashlib.sha256(out.getvalue()).hexdigest()[:16]
    except Exception:
        return "repr:" + _ADDR.sub("", repr(value))[:200]

def probe():
    ns = _shell.user_ns
    found = {}
    for name, value in list(ns.items()):
        if name.startswith("_") or name in _HIDDEN or name.startswith("nb_mlops_"):
            continue
        digest = _digest(value)
        if digest is not None:
            found[name] = digest
    return found

import contextlib, io, json

def run_cells(cells):
    """Run (source, probe) cells in order; per cell: printed output, error name, digests."""
    found = []
    for source, wanted in cells:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            result = _shell.run_cell(source, store_history=False)
        error = result.error_in_exec or result.error_before_exec
        found.append({
            "out": out.getvalue(),
            "error": type(error).__name__ if error is not None else None,
            "after": probe() if wanted else {},
        })
        if error is not None:
            break
    global LAST
    LAST = json.dumps(found)

LAST = "[]"

import numpy as _np
_NP_PRINT = _np.get_printoptions()
_RECURSION = sys.getrecursionlimit()

def reset(cwd):
    ns = _shell.user_ns
    for name in [n for n in ns if n not in _INITIAL]:
        del ns[name]
    ns.update(_INITIAL)
    os.environ.clear(); os.environ.update(_ENV)
    os.chdir(cwd)
    sys.path[:] = _PATH
    warnings.filters[:] = _FILTERS
    for event, funcs in _CALLBACKS.items():
        _shell.events.callbacks[event][:] = funcs
    import random
    random.seed()
    if "numpy" in sys.modules:
        np = sys.modules["numpy"]
        np.random.seed()
        np.seterr(all="warn", under="ignore")  # numpy's defaults
        np.set_printoptions(**_NP_PRINT)
    import decimal
    decimal.setcontext(decimal.Context())
    sys.setrecursionlimit(_RECURSION)
    if "pandas" in sys.modules:
        sys.modules["pandas"].reset_option("all")
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].rcdefaults()
'''
_PROBE = "__import__('_nb_fid').probe()"


@dataclass
class CellRun:
    """What one cell did: its printed output, the error it raised, digests after it."""

    out: str = ""
    error: str | None = None
    after: dict[str, str] = field(default_factory=dict)


class WarmKernel:
    """One python3 kernel reused for many runs (see the module docstring for what a reset
    restores)."""

    def __init__(self) -> None:
        from jupyter_client import KernelManager

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        )
        env["PYTHONHASHSEED"] = "0"  # set iteration order: the same in both runs
        env.setdefault("JUPYTER_PLATFORM_DIRS", "1")
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, extra_arguments=["--HistoryManager.hist_file=:memory:"])
        self.client = self.km.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        code = (
            "import sys, types\n_m = types.ModuleType('_nb_fid')\n"
            "_m.__dict__['get_ipython'] = get_ipython\n"
            f"exec({_HELPER!r}, _m.__dict__)\nsys.modules['_nb_fid'] = _m\ndel _m"
        )
        self.execute(code, probe=False)

    def close(self) -> None:
        self.client.stop_channels()
        self.km.shutdown_kernel(now=True)

    def execute(self, code: str, probe: bool = True, timeout: float = 60) -> CellRun:
        """Run `code` as a cell; its stdout/stderr, error name and (with `probe`) digests."""
        run = CellRun()
        chunks: list[str] = []

        def on_output(msg: dict[str, Any]) -> None:
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "stream":
                chunks.append(content["text"])
            elif kind == "error":
                run.error = content["ename"]
            elif kind in ("execute_result", "display_data"):
                chunks.append(content.get("data", {}).get("text/plain", "") + "\n")

        expressions = {"probe": _PROBE} if probe else {}
        try:
            reply = self.client.execute_interactive(
                code,
                user_expressions=expressions,
                output_hook=on_output,
                timeout=timeout,
                stop_on_error=False,
            )
        except queue.Empty as exc:  # pragma: no cover - a hung cell
            raise TimeoutError(f"cell did not finish in {timeout}s:\n{code}") from exc
        content = reply["content"]
        if content.get("status") == "error" and run.error is None:
            run.error = content.get("ename")
        if probe:
            value = content.get("user_expressions", {}).get("probe", {})
            text = value.get("data", {}).get("text/plain", "{}")
            run.after = eval(text) if value.get("status") == "ok" else {}  # noqa: S307 - our repr
        run.out = "".join(chunks)
        return run

    def numbers(self, names: list[str]) -> dict[str, float]:
        """The numeric values of `names` in the namespace (what a metrics cell records)."""
        code = (
            f"{{n: float(v) for n, v in get_ipython().user_ns.items() if n in {names!r} "
            "and isinstance(v, (int, float)) and not isinstance(v, bool)}"
        )
        reply = self.client.execute_interactive(
            "", user_expressions={"v": code}, timeout=30, output_hook=lambda msg: None
        )
        value = reply["content"]["user_expressions"]["v"]
        return eval(value["data"]["text/plain"]) if value.get("status") == "ok" else {}  # noqa: S307

    def reset(self, cwd: Path) -> None:
        self.execute(f"__import__('_nb_fid').reset({str(cwd)!r})", probe=False)

    def run_cells(self, cwd: Path, cells: list[tuple[str, bool]]) -> list[CellRun]:
        """Reset, then run (source, probe) cells in order in one request, up to an error."""
        code = (
            f"__import__('_nb_fid').reset({str(cwd)!r})\n__import__('_nb_fid').run_cells({cells!r})"
        )
        reply = self.client.execute_interactive(
            code,
            user_expressions={"last": "__import__('_nb_fid').LAST"},
            timeout=120,
            output_hook=lambda msg: None,
        )
        content = reply["content"]
        if content.get("status") != "ok":
            raise RuntimeError(
                f"the harness failed: {content.get('ename')}: {content.get('evalue')}"
            )
        value = content["user_expressions"]["last"]
        found = json.loads(eval(value["data"]["text/plain"]))  # noqa: S307 - our repr of a str
        return [CellRun(c["out"], c["error"], c["after"]) for c in found]


def _code_cells(cells: list[Cell]) -> list[tuple[str, list[str]]]:
    return [(c, []) if isinstance(c, str) else (c[0], list(c[1])) for c in cells]


def run_top_to_bottom(kernel: WarmKernel, cells: list[Cell], cwd: Path) -> list[CellRun]:
    """Every code cell in order in one namespace (as papermill would, `skip` cells included),
    up to the first error."""
    return kernel.run_cells(cwd, [(source, True) for source, _tags in _code_cells(cells)])


@dataclass
class PipelineRun:
    """Per source cell (1-based position) what it did inside its step, and the metrics."""

    cells: dict[int, CellRun] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    failed: str | None = None


def run_pipeline_warm(kernel: WarmKernel, spec_dir: Path, cwd: Path, values: Path) -> PipelineRun:
    """Each step notebook of a built pipeline, in order, in a reset namespace."""
    spec = load_pipeline(spec_dir)
    result = PipelineRun()
    for name, step in spec.steps.items():
        nb = nbformat.read(spec.dir / step.notebook, as_version=4)
        inputs = {
            k: str(
                values
                / producer
                / json.loads((values / producer / DONE_FILE).read_text())["outputs"][k]["file"]
            )
            for k, producer in step.inputs.items()
        }
        context = encode_context({"inputs": inputs, "outputs_dir": str(values / name)})
        batch: list[tuple[str, bool]] = []
        where: list[tuple[int | None, str]] = []
        head: list[str] = []
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            tags = cell.metadata.get("tags", [])
            if "parameters" in tags:
                head.append(cell.source)
                head.append(f"nb_mlops_context = {context!r}")  # what papermill injects
                continue
            if "nb_mlops-setup" in tags:
                head.append(cell.source)
                batch.append(("\n".join(head), False))
                where.append((None, "the setup cell"))
                continue
            source_cell = cell.metadata.get("nb_mlops", {}).get("source_cell")
            own = source_cell is not None and not tags
            batch.append((cell.source, own))
            where.append((source_cell if own else None, tags[0] if tags else "a cell"))
        runs = kernel.run_cells(cwd, batch)
        for (source_cell, label), run in zip(where, runs, strict=False):
            if source_cell is not None:
                result.cells[source_cell] = run
            if run.error:
                at = f"cell #{source_cell}" if source_cell is not None else label
                result.failed = f"step {name!r} failed in {at}: {run.error}"
                return result
        marker = json.loads((values / name / DONE_FILE).read_text())
        result.metrics.update(marker.get("metrics", {}))
    return result


@dataclass
class Verdict:
    """How a notebook fared: refused at build (the message), or the differences found; and
    whether it fails top to bottom already (then it is no test of the pipeline)."""

    refused: str | None = None
    differences: list[str] = field(default_factory=list)
    notebook_error: str | None = None


def compare(cells: list[Cell], notebook: list[CellRun], pipeline: PipelineRun) -> list[str]:
    """Differences, one line each, between the top-to-bottom run and the pipeline's cells."""
    found: list[str] = []
    before: dict[str, str] = {}
    for index, (expected, (source, _tags)) in enumerate(
        zip(notebook, _code_cells(cells), strict=False), 1
    ):
        got = pipeline.cells.get(index)
        previous, before = before, expected.after
        if got is None:
            continue  # not a step cell (parameters, imports, metrics...)
        where = f"cell #{index} `{source.splitlines()[0][:60] if source else ''}`"
        if got.out != expected.out:
            found.append(f"{where}: printed {got.out!r}, top to bottom {expected.out!r}")
        if got.error != expected.error:
            found.append(f"{where}: raised {got.error}, top to bottom {expected.error}")
        changed = {k for k, v in expected.after.items() if previous.get(k) != v}
        for name in sorted(changed & set(got.after)):
            if got.after[name] != expected.after[name]:
                found.append(
                    f"{where}: `{name}` differs after it "
                    f"({got.after[name]} vs {expected.after[name]} top to bottom)"
                )
    return found


def check_notebook(kernel: WarmKernel, cells: list[Cell], root: Path) -> Verdict:
    """Build and run `cells` both ways in `root` (a project folder); the verdict."""
    work = root / "work"
    shutil.rmtree(root, ignore_errors=True)
    work.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    path = new_notebook(root / "nb.ipynb", cells)
    try:
        spec = build_pipeline(path, output=root / "pipeline")
    except BuildError as exc:
        return Verdict(refused=str(exc))
    notebook = run_top_to_bottom(kernel, cells, work)
    verdict = Verdict()
    failing = next((i for i, run in enumerate(notebook, 1) if run.error), None)
    if failing is not None:
        verdict.notebook_error = f"cell #{failing}: {notebook[failing - 1].error}"
        return verdict
    expected_metrics = kernel.numbers(list(spec.metrics))
    shutil.rmtree(work)
    work.mkdir()
    pipeline = run_pipeline_warm(kernel, spec.dir, work, root / "values")
    if pipeline.failed:
        verdict.differences.append(pipeline.failed)
    verdict.differences += compare(cells, notebook, pipeline)
    if not pipeline.failed and pipeline.metrics != expected_metrics:
        verdict.differences.append(f"metrics {pipeline.metrics}, top to bottom {expected_metrics}")
    return verdict


def scratch_project() -> Path:
    """A temporary project folder (pyproject.toml with [tool.nb_mlops])."""
    root = Path(tempfile.mkdtemp(prefix="fidelity_"))
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    return root


def real_outputs(nb: Any) -> dict[int, str]:
    """Printed output per source cell of an executed notebook: papermill's (cells by position),
    or a step's (its cells marked with their source cell; the runner's own cells left out)."""
    marked = any(c.metadata.get("nb_mlops", {}).get("source_cell") for c in nb.cells)
    found: dict[int, str] = {}
    for position, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        index = cell.metadata.get("nb_mlops", {}).get("source_cell")
        if index is None:
            if marked:
                continue  # the runner's set-up, loader or saver cell
            index = position
        text = "".join(
            o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
        )
        found[index] = strip_kernel_noise(text)
    return found


def python_env() -> dict[str, str]:
    """Environment for kernels started by papermill or the runner in these tests."""
    env = {"PYTHONHASHSEED": "0"}
    path = os.environ.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, path.split(os.pathsep))])
    return env


__all__ = [
    "CellRun",
    "PipelineRun",
    "Verdict",
    "WarmKernel",
    "check_notebook",
    "compare",
    "python_env",
    "real_outputs",
    "run_pipeline_warm",
    "run_top_to_bottom",
    "scratch_project",
]

del sys
