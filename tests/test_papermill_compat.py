"""papermill compatibility: papermill's own test notebooks (read from the installed package, never
copied into this repository) run by plain papermill and as nb_mlops pipelines behave the same,
except for the deliberate differences listed here with their reasons; our parameter inference
finds everything `papermill.inspect_notebook` finds, with compatible types, defaults and help."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nb_mlops.core.config import load_config
from nb_mlops.core.errors import BuildError, ParameterError
from nb_mlops.pipeline import build_pipeline, run_pipeline
from nb_mlops.pipeline.convert import BuildWarning
from nb_mlops.pipeline.params import _type_of, read_parameters
from tests.kernel_noise import strip_kernel_noise
from tests.nbutil import IOPUB_TIMEOUT, papermill_execute

NOTEBOOKS = Path(str(files("papermill") / "tests" / "notebooks"))


@dataclass
class Case:
    """One papermill test notebook and the parameters papermill's own tests pass to it."""

    path: str
    params: dict[str, Any] = field(default_factory=dict)
    cell_timeout: float | None = None
    # names nb_mlops refuses up front, on purpose (the comparison then runs without them)
    refused: dict[str, str] = field(default_factory=dict)
    # an output only papermill's run has, on purpose, and why
    only_papermill: tuple[Any, ...] | None = None
    reason: str = ""


UNKNOWN = "an unknown name is refused before anything runs (papermill injects it anyway)"
MISTYPED = "a value not of the type the default declares is refused before anything runs"

CASES = [
    Case("binder.ipynb"),
    Case("blank-vscode.ipynb", {"var": "It works"}, refused={"var": UNKNOWN}),
    Case("broken.ipynb"),
    Case("broken1.ipynb"),
    Case("broken2.ipynb"),
    Case("complex_parameters.ipynb"),
    Case("gcs/gcs_in/gcs-simple_notebook.ipynb"),
    # papermill's tests only prepare it (60 s of sleep); both ways run it under a cell timeout
    Case(
        "keyboard_interrupt.ipynb",
        cell_timeout=2,
        only_papermill=("error", "KeyboardInterrupt", ""),
        reason="a cell that times out: papermill's kernel shutdown interrupts it, and the "
        "KeyboardInterrupt lands in the cell's outputs; a step's kernel is killed at once with "
        "everything it started, so the cell shows no such output (the step error names the "
        "timeout)",
    ),
    Case("line_magic_error.ipynb"),
    Case("nb_version_4.4.ipynb", {"var": "It works"}, refused={"var": MISTYPED}),
    Case("no_parameters.ipynb", {"msg": "Hello"}, refused={"msg": UNKNOWN}),
    Case("read_check.ipynb"),
    Case("report_mode_test.ipynb", {"a": 0}),
    Case("result_no_exec.ipynb"),
    Case("s3/s3_in/s3-simple_notebook.ipynb", {"msg": "Hello"}),
    Case("simple_execute.ipynb", {"msg": '"Hello"'}),
    Case("sysexit.ipynb"),
    Case("sysexit0.ipynb"),
    Case("sysexit1.ipynb"),
    Case("systemexit.ipynb"),
    Case("test_autosave.ipynb"),
    Case("test_logging.ipynb"),
    Case("test_notebooknode_io.ipynb"),
]
NOT_PYTHON = ["notimplemented_translator.ipynb"]  # an R notebook: refused at build


def _stem(case: Case) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", Path(case.path).stem.lower())


def _normal(output: Any) -> tuple[Any, ...]:
    """An output without what differs between any two runs (tracebacks, timings, paths)."""
    kind = output.get("output_type")
    if kind == "stream":
        return (kind, output.get("name"), output.get("text", ""))

    if kind == "error":  # IPython names a cell's code after a random number: "(123.py, line 4)"
        return (kind, output.get("ename"), re.sub(r"\b\d+\.py\b", "<cell>.py", output["evalue"]))
    data = output.get("data", {})
    return (kind, tuple(sorted(data)), data.get("text/plain"))


_TIMING = re.compile(r"\[\d+:\d+<[^\]]*\]")  # a progress bar's "[00:03<00:00, 1.11cell/s]"


def _terminal(text: str) -> str:
    """A stream as a terminal shows it (a carriage return rewrites its line), timings masked."""
    # noise first (a message may cut a progress bar's line short), then each line as shown
    lines = [line.rsplit("\r", 1)[-1] for line in strip_kernel_noise(text).split("\n")]
    return _TIMING.sub("[time]", strip_kernel_noise("\n".join(lines)))


def _outputs(outputs: list[Any]) -> tuple[Any, ...]:
    """Outputs normalised, consecutive stream chunks joined (where a stream splits varies)."""
    found: list[tuple[Any, ...]] = []
    for output in map(_normal, outputs):
        if found and output[0] == "stream" and found[-1][:2] == output[:2]:
            found[-1] = (*output[:2], found[-1][2] + output[2])
        else:
            found.append(output)
    return tuple((*o[:2], _terminal(o[2])) if o[0] == "stream" else o for o in found)


def _cells(nb: Any, code_positions: list[int]) -> dict[int, tuple[bool, tuple[Any, ...]]]:
    return {
        pos: (cell.get("execution_count") is not None, _outputs(cell.outputs))
        for pos, cell in zip(code_positions, nb.cells, strict=True)
    }


@dataclass
class Outcome:
    ok: bool
    error: str  # the exception name the run ended with ("" on success)
    cells: dict[int, tuple[bool, tuple[Any, ...]]]  # source cell position → (ran, outputs)
    refusal: str = ""


def _run_papermill(source: Path, out: Path, case: Case, params: dict[str, Any]) -> Outcome:
    error = ""
    try:
        papermill_execute(
            str(source),
            str(out),
            parameters=params,
            kernel_name="python3",  # as papermill's own tests run them
            progress_bar=False,
            execution_timeout=case.cell_timeout,
            iopub_timeout=IOPUB_TIMEOUT,
        )
    except papermill.PapermillExecutionError as exc:
        error = exc.ename
    except Exception as exc:  # a cell timeout
        error = type(exc).__name__
    nb = nbformat.read(str(out), as_version=4)
    inserted = {"injected-parameters", "papermill-error-cell-tag"}
    kept = [c for c in nb.cells if not inserted & set(c.metadata.get("tags", []))]
    source_nb = nbformat.read(str(source), as_version=4)
    positions = [i for i, c in enumerate(source_nb.cells) if c.cell_type == "code"]
    code = [c for c in kept if c.cell_type == "code"]
    return Outcome(not error, error, _cells(nbformat.from_dict({"cells": code}), positions))


def _run_ours(source: Path, case: Case, params: dict[str, Any], cfg: Any, name: str) -> Outcome:
    run = run_pipeline(name, params, cfg=cfg, cache=False, cell_timeout=case.cell_timeout)
    step = next(iter(run.steps.values()))
    error = ""
    if step.error:
        # "step 'main' failed in cell #2 of the notebook: AssertionError: ..."
        error = step.error.split(": ", 1)[1].split(":", 1)[0].strip()
    nb = nbformat.read(str(run.run_dir / f"{step.name}.ipynb"), as_version=4)
    source_nb = nbformat.read(str(source), as_version=4)
    params_at = next(
        (
            i
            for i, c in enumerate(source_nb.cells)
            if "parameters" in c.metadata.get("tags", []) and c.cell_type == "code"
        ),
        None,
    )
    cells: dict[int, tuple[bool, tuple[Any, ...]]] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        at = cell.metadata.get("nb_mlops", {}).get("source_cell")
        if at is not None:
            cells.update(_cells(nbformat.from_dict({"cells": [cell]}), [at - 1]))
        elif "parameters" in cell.metadata.get("tags", []) and params_at is not None:
            cells.update(_cells(nbformat.from_dict({"cells": [cell]}), [params_at]))
    return Outcome(run.status == "SUCCEEDED", error, cells)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Outcome, Outcome]]:
    """Every case run both ways, once: builds first (warnings are process-wide), then the runs
    in a few threads (most of the time is kernels sleeping in the notebooks' own cells)."""
    root = tmp_path_factory.mktemp("compat")
    (root / "pyproject.toml").write_text('[project]\nname = "compat"\n\n[tool.nb_mlops]\n')
    # binder.ipynb runs `cd ../../../ && python -m papermill papermill/tests/notebooks/...`
    folder = root / "papermill" / "tests" / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    (folder / "check.txt").write_text("exists")  # read_check.ipynb looks for it in its cwd
    (root / "out").mkdir()
    cfg = load_config(root)
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    refusals: dict[str, str] = {}
    for case in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BuildWarning)
            spec = build_pipeline(folder / case.path, name=_stem(case), cfg=cfg)
        if case.refused:
            try:
                run_pipeline(spec.dir, case.params, cfg=cfg)
            except ParameterError as exc:
                refusals[case.path] = str(exc)

    def params(case: Case) -> dict[str, Any]:
        return {k: v for k, v in case.params.items() if k not in case.refused}

    def ours(case: Case) -> Outcome:
        outcome = _run_ours(folder / case.path, case, params(case), cfg, _stem(case))
        outcome.refusal = refusals.get(case.path, "")
        return outcome

    def plain(case: Case) -> Outcome:
        out = root / "out" / f"{_stem(case)}.ipynb"
        return _run_papermill(folder / case.path, out, case, params(case))

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", env["PATH"])
        # papermill's `cwd` argument is a process-wide chdir, unsafe in threads: its kernels
        # start in the process's folder instead, the notebooks' folder (a pipeline's kernel
        # starts in its notebook's folder)
        mp.chdir(folder)
        with ThreadPoolExecutor(4) as pool:
            plains = pool.map(plain, CASES)
            pipelines = pool.map(ours, CASES)
            done = {c.path: (p, o) for c, p, o in zip(CASES, plains, pipelines, strict=True)}
    return done


def test_the_case_list_is_papermills_python_notebooks() -> None:
    # Given every notebook papermill ships for its tests
    shipped = sorted(p.relative_to(NOTEBOOKS).as_posix() for p in NOTEBOOKS.rglob("*.ipynb"))
    # Then each is a case here, or a non-Python notebook refused at build
    assert sorted([c.path for c in CASES] + NOT_PYTHON) == shipped
    assert len(CASES) == 23


@pytest.mark.parametrize("case", CASES, ids=[c.path for c in CASES])
def test_papermill_notebook_behaves_the_same_as_a_pipeline(
    case: Case, outcomes: dict[str, tuple[Outcome, Outcome]]
) -> None:
    # Given the notebook run by papermill and as a pipeline, with papermill's test parameters
    plain, ours = outcomes[case.path]
    # Then a parameter we refuse on purpose was refused up front, naming it
    for name in case.refused:
        assert f"`{name}`" in ours.refusal or repr(name) in ours.refusal, ours.refusal
    # Then both succeeded, or both failed with the same error
    assert (ours.ok, ours.error) == (plain.ok, plain.error)
    # Then every code cell ran (or not) alike, with the same outputs (but for a difference
    # listed with its reason, which papermill's run does show)
    expected = plain.cells
    if case.only_papermill is not None:
        assert case.reason and any(case.only_papermill in o for _, o in expected.values())
        expected = {
            at: (ran, tuple(o for o in outputs if o != case.only_papermill))
            for at, (ran, outputs) in expected.items()
        }
    assert ours.cells == expected


def test_a_non_python_notebook_is_refused_at_build_naming_its_kernel(project: Path) -> None:
    shutil.copy(NOTEBOOKS / NOT_PYTHON[0], project / "r.ipynb")
    with pytest.raises(BuildError) as info:
        build_pipeline(project / "r.ipynb")
    message = str(info.value)
    assert "kernel 'r' (language 'R')" in message and "\n" not in message


# --- parameter inference against papermill.inspect_notebook ---------------------------------


def _compatible(name: str, theirs: dict[str, str], ours: dict[str, Any]) -> None:
    """papermill's view of one parameter fits ours: type, default and help.

    Where papermill reads more or less than the code says, ours is the code's: a default text
    that is not an expression or not a literal (papermill glued the next line to it) is not
    compared, and a help comment is kept when a later line assigns the name again without one.
    """
    if theirs["inferred_type_name"] != "None":  # papermill's "unknown"
        expected = _type_of(None, theirs["inferred_type_name"])
        assert ours["type"] in (expected, f"{expected} | None"), (name, theirs, ours)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "0if True:" warns, then fails
            ast.parse(theirs["default"], mode="eval")
    except SyntaxError:
        pass
    else:
        if "default" in ours:
            try:
                value = ast.literal_eval(theirs["default"])
            except ValueError:  # glued to the next line into another expression: `Noneprint(..)`
                pass
            else:
                assert value == ours["default"], (name, theirs, ours)
        else:
            flat = "".join(theirs["default"].split())
            assert flat == "".join(str(ours.get("computed", "")).split()), (name, theirs, ours)
    if theirs["help"]:
        assert theirs["help"] == ours.get("help"), (name, theirs, ours)


def _ours(path: Path) -> dict[str, dict[str, Any]]:
    nb = nbformat.read(str(path), as_version=4)
    schema: dict[str, dict[str, Any]] = {}
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            schema.update(read_parameters(cell.source, "cell").schema)
            break  # papermill inspects the first parameters cell
    return schema


@pytest.mark.parametrize("path", [c.path for c in CASES], ids=[c.path for c in CASES])
def test_inference_finds_what_inspect_notebook_finds(path: str) -> None:
    theirs = papermill.inspect_notebook(str(NOTEBOOKS / path))
    ours = _ours(NOTEBOOKS / path)
    assert set(theirs) <= set(ours)
    for name, param in theirs.items():
        _compatible(name, param, ours[name])


def test_complex_parameters_inference_keeps_papermills_help_and_reads_more() -> None:
    ours = _ours(NOTEBOOKS / "complex_parameters.ipynb")
    assert ours == {
        "msg": {"type": "any", "default": None},
        "a": {"type": "float", "default": 2.25, "help": "Variable a"},
        "b": {"type": "list[str]", "default": ["Hello", "World"], "help": "Nice list"},
        "c": {"type": "None", "default": None},
        "d": {"type": "any", "computed": "a == 3"},  # papermill skips it (two '=')
    }


_NAMES = st.sampled_from(["a", "b", "n", "msg", "cfg", "path", "x_1"])
_LITERALS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.text(st.characters(codec="ascii", exclude_characters="#=\\\"'\n\r"), max_size=8).map(
        lambda t: json.dumps(t)
    ),
    st.sampled_from(["None", "True", "False", "[1, 2]", "['x', 'y']", '{"b": 1, "a": 2}']),
)
_EXPRESSIONS = st.sampled_from(
    ["10**6", 'float("inf")', 'f"{a}-x"', "(1, 2)", "{1, 2}", 'b"x"', 'Path("data")', "{1: 2}"]
)
_TYPES = st.sampled_from(["", ": int", ": float", ": str", ": List[str]", ": Path", ": bool"])
_HELP = st.sampled_from(["", "  # the value", "  # type: int", "  # type: str some text"])


@st.composite
def _parameter_cells(draw: st.DrawFn) -> str:
    lines = ["from pathlib import Path", "from typing import List"]
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["assign", "assign", "expr", "noise", "nested", "multi"]))
        name = draw(_NAMES)
        if kind == "noise":
            lines.append(draw(st.sampled_from(["", "# a comment", 'print("hi")', "import os"])))
        elif kind == "nested":
            lines += ["if True:", f"    {name} = {draw(_LITERALS)}"]
        elif kind == "multi":
            lines += [f"{name} = [", "    1,  # one", "    2,", f"]{draw(_HELP)}"]
        else:
            value = draw(_LITERALS if kind == "assign" else _EXPRESSIONS)
            annotation = "" if value == "None" else draw(_TYPES)
            lines.append(f"{name}{annotation} = {value}{draw(_HELP)}")
    return "\n".join(lines)


@settings(max_examples=150, deadline=None)
@given(source=_parameter_cells())
def test_random_parameter_cells_infer_at_least_what_papermill_infers(source: str) -> None:
    # Given a parameters cell papermill can run
    from papermill.translators import PythonTranslator

    cell = nbformat.v4.new_code_cell(source)
    try:
        ast.parse(source)
    except SyntaxError:
        return
    theirs = {p.name: p._asdict() for p in PythonTranslator.inspect(cell)}
    # When we read it (a default that does not fit its annotation is refused on purpose)
    try:
        ours = read_parameters(source, "cell").schema
    except BuildError as exc:
        assert "does not fit its type" in str(exc)
        return
    # Then every parameter papermill finds, we find, with a compatible type, default and help
    assert set(theirs) <= set(ours)
    for name, param in theirs.items():
        _compatible(name, param, ours[name])


THIRTEEN = [
    ("import os\nn = 1", {"n"}),
    ("t = (1, 2)", {"t"}),
    ("n = 10**6", {"n"}),
    ('name = "x"\ntag = f"{name}-1"', {"name", "tag"}),
    ("a = b = 1", {"a", "b"}),
    ("a, b = 1, 2", {"a", "b"}),
    ('from pathlib import Path\np: Path = Path("data")', {"p"}),
    ('m = {1: "a"}', {"m"}),
    ("s = {1, 2}", {"s"}),
    ('x = float("inf")', {"x"}),
    ('raw = b"x"', {"raw"}),
    ("x: int", {"x"}),
    ('print("hi")\nn = 2', {"n"}),
    ("%env MY_VAR=1\nn = 3  # three", {"n"}),
]


@pytest.mark.parametrize(("source", "names"), THIRTEEN, ids=[s for s, _ in THIRTEEN])
def test_cells_papermill_runs_are_read_at_least_as_well(source: str, names: set[str]) -> None:
    from papermill.translators import PythonTranslator

    theirs = {
        p.name: p._asdict() for p in PythonTranslator.inspect(nbformat.v4.new_code_cell(source))
    }
    ours = read_parameters(source, "cell").schema
    assert set(ours) == names and set(theirs) <= names
    for name, param in theirs.items():
        _compatible(name, param, ours[name])
