"""A papermill user's notebooks and habits, as pipelines: the parameters cell runs as written
(computed defaults, magics, prints, help comments), values passed in arrive typed and in their
order (papermill's option spellings included), sys.exit(0) ends a run successfully, a cell that is
not valid Python fails where papermill fails, non-Python kernels are refused at build."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nbformat
import pytest

from nb_mlops.cli import main
from nb_mlops.core.errors import BuildError
from nb_mlops.pipeline import build_pipeline, run_pipeline
from nb_mlops.pipeline.convert import BuildWarning
from tests.nbutil import new_notebook

KINDS = """import os
from pathlib import Path
%env MY_VAR=1
t = (1, 2)
big = 10**6  # rows to read
name = "x"  # the name
tag = f"{name}-1"
a = b = 1
c, d = 3, 4
p: Path = Path("data")
m = {1: "a"}
s = {1, 2}
inf = float("inf")
raw = b"x"
x: int
print("params ran")
cfg = {"b": 1, "a": 2}
msg = None
"""
SEEN = (
    "import json\n"
    "names = ['t', 'big', 'name', 'tag', 'a', 'b', 'c', 'd', 'p', 'm', 's', 'inf', 'raw', 'x',"
    " 'cfg', 'msg']\n"
    "seen = {n: repr(globals()[n]) if n in globals() else 'unset' for n in names}\n"
    "seen['env'] = os.environ.get('MY_VAR')\n"
    "open('seen.json', 'w').write(json.dumps(seen))"
)


def _seen(project: Path) -> dict[str, str]:
    return json.loads((project / "seen.json").read_text())


def test_parameter_cells_papermill_runs_build_run_and_take_values(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    # Given a parameters cell of every kind papermill runs: imports, a magic, a print,
    # computed defaults, chained and unpacked assignments, an annotation alone, help comments
    new_notebook(project / "kinds.ipynb", [(KINDS, ["parameters"]), SEEN])
    spec = build_pipeline(project / "kinds.ipynb")
    assert spec.parameters["big"] == {"type": "any", "computed": "10**6", "help": "rows to read"}
    assert spec.parameters["p"] == {"type": "str", "computed": 'Path("data")'}
    assert spec.parameters["x"] == {"type": "int"}
    assert spec.parameters["cfg"] == {"type": "dict", "default": {"b": 1, "a": 2}}

    # When it runs with no values: the cell's own code makes every default, in the kernel
    first = run_pipeline("kinds")
    assert first.status == "SUCCEEDED", first.error
    assert _seen(project) == {
        "t": "(1, 2)",
        "big": "1000000",
        "name": "'x'",
        "tag": "'x-1'",
        "a": "1",
        "b": "1",
        "c": "3",
        "d": "4",
        "p": "PosixPath('data')",
        "m": "{1: 'a'}",
        "s": "{1, 2}",
        "inf": "inf",
        "raw": "b'x'",
        "x": "unset",
        "cfg": "{'b': 1, 'a': 2}",
        "msg": "None",
        "env": "1",
    }
    out = nbformat.read(first.run_dir / "main.ipynb", as_version=4)
    assert "params ran" in json.dumps(out.cells[1].outputs)
    assert "big" not in first.params  # a computed default is not the runner's to pass

    # When values come on papermill's command line (its spellings), from YAML text and a file
    (project / "values.yaml").write_text("m: {q: 1, p: 2}\nname: from-file\n")
    code = main(
        [
            "pipeline",
            "run",
            "kinds",
            "-p",
            "msg",
            '"Hello"',
            "-p",
            "big",
            "5",
            "--parameters",
            "cfg",
            '{"z": 1, "y": 2}',
            "-y",
            "x: 7",
            "--parameters_file",
            str(project / "values.yaml"),
            "-p",
            "p=out/dir",
            "--json",
        ]
    )
    capsys.readouterr()
    # Then untyped text reads as papermill reads it, typed values are typed, dicts keep order
    assert code == 0
    seen = _seen(project)
    assert seen["msg"] == repr('"Hello"') and seen["big"] == "5" and seen["x"] == "7"
    assert seen["cfg"] == "{'z': 1, 'y': 2}" and seen["m"] == "{'q': 1, 'p': 2}"
    assert seen["name"] == "'from-file'" and seen["p"] == "'out/dir'"
    assert seen["tag"] == "'x-1'"  # computed by the cell before the values arrive, as papermill

    # When the same dict comes in another key order: not the cached run, the kernel sees it so
    again = run_pipeline("kinds", {"cfg": {"a": 2, "b": 1}})
    assert not again.steps["main"].cached and _seen(project)["cfg"] == "{'a': 2, 'b': 1}"

    # When a value does not fit the declared type: refused before anything runs
    runs = sorted((project / ".nb_mlops" / "runs" / "kinds").iterdir())
    assert main(["pipeline", "run", "kinds", "-p", "x", "1.5"]) == 1
    assert "parameter `x` expects int, got '1.5' (str)" in capsys.readouterr().err
    assert sorted((project / ".nb_mlops" / "runs" / "kinds").iterdir()) == runs


STOPPING = [
    ("code = 0  # the exit status", ["parameters"]),
    ("x = 1", ["step:a"]),
    ("import sys\nsys.exit(code)\ny = 2", ["step:b", "prev:a"]),
    "print('after the exit')",
    ("z = y + 1", ["step:c"]),
    ("w = x * 5", ["step:d"]),
    ("print(w)", ["pipeline-metrics"]),
]


def test_sys_exit_0_ends_the_run_successfully_and_a_status_fails_it(project: Path) -> None:
    # Given a step that calls sys.exit(code), a step after it, and an independent one
    new_notebook(project / "stop.ipynb", STOPPING)
    build_pipeline(project / "stop.ipynb")
    # When it runs with status 0: papermill's successful early end
    run = run_pipeline("stop")
    steps = run.steps
    # Then the run succeeded: the step stopped there, the steps after it did not run, the
    # independent step did
    assert run.status == "SUCCEEDED", run.error
    assert {k: s.status for k, s in steps.items()} == {
        "a": "SUCCEEDED",
        "b": "SUCCEEDED",
        "c": "CANCELLED",
        "d": "SUCCEEDED",
    }
    assert steps["b"].cell == "stopped early: sys.exit(0)" and steps["b"].error is None
    assert steps["c"].cell == "not run: step 'b' ended the run early (sys.exit(0))"
    assert steps["c"].error is None and run.error is None and run.metrics["w"] == 5.0
    # the step's output notebook shows the exit as papermill's does; its later cell never ran
    cells = [c for c in nbformat.read(run.run_dir / "b.ipynb", as_version=4).cells]
    exit_cell = next(c for c in cells if "sys.exit" in c.source)
    after = next(c for c in cells if "after the exit" in c.source)
    assert [(o.ename, o.evalue) for o in exit_cell.outputs if o.output_type == "error"] == [
        ("SystemExit", "0")
    ]
    assert after.execution_count is None
    # When it runs again: the early end comes from the cache too
    again = run_pipeline("stop")
    assert again.status == "SUCCEEDED" and again.steps["c"].status == "CANCELLED"
    assert again.steps["b"].cached and again.steps["b"].cell == "cached, stopped early: sys.exit(0)"
    # When the status is not 0: the step failed with papermill's error, the run failed
    failed = run_pipeline("stop", {"code": 3})
    assert failed.status == "FAILED"
    assert (failed.steps["b"].error or "").endswith("SystemExit: 3")
    assert failed.steps["c"].error == "not run: an upstream step failed"


def test_a_python_kernel_of_any_name_runs_and_other_languages_are_refused(project: Path) -> None:
    # Given a notebook for a virtualenv's kernel, whose parameters use an import above them
    path = new_notebook(
        project / "venv.ipynb",
        ["import json", ("data = json.dumps({'b': 1, 'a': 2})", ["parameters"]), "print(data)"],
    )
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {"name": "my-venv", "display_name": "venv", "language": "python"}
    nbformat.write(nb, path)
    # When it is built and run: it runs (in the environment nb_mlops runs in)
    spec = build_pipeline(path)
    assert "import json" in (spec.dir / "steps" / "main.ipynb").read_text()
    run = run_pipeline("venv")
    assert run.status == "SUCCEEDED", run.error
    # Given the same notebook for a Julia kernel: refused at build, in one line naming it
    nb.metadata["kernelspec"] = {"name": "julia-1.9", "display_name": "Julia", "language": "julia"}
    nbformat.write(nb, project / "jl.ipynb")
    with pytest.raises(BuildError, match=r"kernel 'julia-1.9' \(language 'julia'\)"):
        build_pipeline(project / "jl.ipynb")


def test_a_cell_that_is_not_python_builds_with_a_warning_naming_it(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    # Given a notebook whose third cell would stop a run (papermill's broken1.ipynb)
    new_notebook(
        project / "broken.ipynb",
        ["print('ok')", "assert False", "print 'never reached'"],
    )
    # When it is built: it builds, and the warning names the cell
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = build_pipeline(project / "broken.ipynb")
    messages = [str(w.message) for w in caught if w.category is BuildWarning]
    assert len(messages) == 1 and "cell #3 (id cell-2): syntax error on line 1" in messages[0]
    assert spec.steps["main"].cells == [1, 2, 3]
    # the command line shows it too
    assert main(["pipeline", "build", "broken.ipynb"]) == 0
    assert "warning: " in capsys.readouterr().err


def test_a_notebook_of_only_parameters_is_one_step_that_applies_them(project: Path) -> None:
    new_notebook(project / "only.ipynb", [("n = 1", ["parameters"])])
    spec = build_pipeline(project / "only.ipynb")
    assert list(spec.steps) == ["main"] and spec.steps["main"].cells == []
    nb = nbformat.read(spec.dir / "steps" / "main.ipynb", as_version=4)
    assert [c.metadata.get("tags", [None])[0] for c in nb.cells] == [
        None,
        "parameters",
        "nb_mlops-setup",
        "nb_mlops-saver",
    ]


def test_help_comments_reach_show_the_help_listing_and_the_promote_dialog(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    from nb_mlops.server.notebook import describe

    # Given parameters with help comments (papermill's `# type:` form included)
    new_notebook(
        project / "helped.ipynb",
        [
            (
                "alpha: float = 0.5  # learning rate\n"
                "cols = ['a']  # type: List[str] columns to keep\n"
                "n = 10**3  # rows\n"
                "= oops",
                ["parameters"],
            ),
            "print(alpha)",
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BuildWarning)
        spec = build_pipeline(project / "helped.ipynb")
    assert spec.parameters["cols"] == {
        "type": "list[str]",
        "default": ["a"],
        "help": "columns to keep",
    }
    # When the pipeline is shown, and listed as papermill's --help-notebook lists
    assert main(["pipeline", "show", "helped"]) == 0
    shown = capsys.readouterr().out
    assert "learning rate" in shown and "columns to keep" in shown and "10**3 (computed)" in shown
    assert main(["pipeline", "run", "helped", "--help-notebook"]) == 0
    listed = capsys.readouterr().out
    assert "  alpha: float (default 0.5)      learning rate" in listed
    assert "  n: any (default 10**3 (computed))\n" + " " * 34 + "rows" in listed
    # When the Promote dialog asks for the notebook's description
    info = describe(project / "helped.ipynb", project)
    fields = {p["name"]: p for p in info["parameters"]}
    assert fields["alpha"]["help"] == "learning rate" and fields["alpha"]["has_default"]
    assert fields["n"] == {
        "name": "n",
        "type": "any",
        "declared_type": "any",
        "default": None,
        "nullable": False,
        "help": "rows",
        "has_default": False,
        "computed": "10**3",
    }
    assert any("line 4 of the parameters cell" in w for w in info["warnings"])
