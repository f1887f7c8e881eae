"""Configuration checked against its schema, and promotion failing closed on any problem.

Given a project whose configuration holds a typo or a misshapen gates table, when it is checked or a
promotion is attempted (CLI, `%promote`, the server), then every problem is named on one line and
no promotion happens. Property tests generate valid and broken tables; a source scan keeps every
key the code reads inside the schema.
"""

from __future__ import annotations

import ast
import json
import math
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from promotion_helpers import make_pipeline_run

import nb_mlops
from nb_mlops.cli import main
from nb_mlops.core.config import load_config
from nb_mlops.core.config_schema import GATE_KEYS, TOP_KEYS, problems
from nb_mlops.core.errors import ConfigError
from nb_mlops.core.promotion import parse_gates
from nb_mlops.magics.promote import PromoteMagics

RIGHT = '[tool.nb_mlops.gates]\nmetrics = { accuracy = ">= 0.9999" }\n'

# The same gate written in the shapes a careless user writes it, and the key each error names.
WRONG_PYPROJECT = {
    "typo [tool.nb_mlops.gate]": (
        '[tool.nb_mlops.gate]\nmetrics = { accuracy = ">= 0.9999" }\n',
        "tool.nb_mlops.gate is not a known key; did you mean `tool.nb_mlops.gates`?",
    ),
    "array of tables [[gates]]": (
        '[[tool.nb_mlops.gates]]\nmetrics = { accuracy = ">= 0.9999" }\n',
        "tool.nb_mlops.gates must be a table",
    ),
    "a list of names": (
        'gates = ["metrics"]\n',
        "tool.nb_mlops.gates must be a table",
    ),
    "a bare threshold": ('gates = ">= 0.9999"\n', "tool.nb_mlops.gates must be a table"),
    "a metric as a gate": (
        '[tool.nb_mlops.gates]\naccuracy = ">= 0.9999"\n',
        'a metric threshold goes under metrics: tool.nb_mlops.gates.metrics = { accuracy = ">= 0.9999" }',
    ),
    "a reversed operator": (
        '[tool.nb_mlops.gates]\nmetrics = { accuracy = "=> 0.9999" }\n',
        "tool.nb_mlops.gates.metrics.accuracy = '=> 0.9999' is not a threshold",
    ),
}


def _pyproject(root: Path, body: str) -> None:
    (root / "pyproject.toml").write_text(f'[project]\nname = "demo"\n\n[tool.nb_mlops]\n{body}')


# --- wrong shapes are errors, and promotion refuses -----------------------------------------------


def test_every_wrong_shape_blocks_promotion_where_the_right_one_blocks_by_gate(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a pipeline run with accuracy 0.973, and the gate accuracy >= 0.9999 written rightly
    run = make_pipeline_run(metrics={"accuracy": 0.973})
    _pyproject(project, RIGHT)
    assert load_config().problems == ()
    # Then the gate blocks it
    assert main(["promote", run, "--model", "m"]) == 1
    assert "BLOCKED: 1 gate(s) failed" in capsys.readouterr().err
    for case, (body, named) in WRONG_PYPROJECT.items():
        # When the same gate is written in a wrong shape
        _pyproject(project, body)
        # Then the configuration names the problem, reading the gates fails closed ...
        cfg = load_config()
        assert any(named in p for p in cfg.problems), (case, cfg.problems)
        with pytest.raises(ConfigError, match="promotion refuses"):
            _ = cfg.gates
        # ... and promotion refuses with one line naming the key: never PROMOTED
        assert main(["promote", run, "--model", "m", "--json"]) == 1, case
        captured = capsys.readouterr()
        assert captured.out == "", case
        assert captured.err.count("\n") == 1 and named in captured.err, (case, captured.err)
    assert [e.action for e in nb_mlops.history("m")] == ["blocked"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('gates = ">= 0.9999"\n', "gates must be a table"),
        ('[[gates]]\nmetrics = { accuracy = ">= 0.9" }\n', "array of tables ([[gates]])"),
        ('gates = ["metrics"]\n', "gates must be a table"),
        ('[gate]\nmetrics = { accuracy = ">= 0.9" }\n', "did you mean `gates`?"),
        ('experimnt = "churn"\n', "did you mean `experiment`?"),
        ("step_timeout = -1\n", "step_timeout must be a number > 0, got -1"),
        ('write_retry_seconds = "10"\n', "write_retry_seconds must be a number >= 0"),
        ('ui_url = "localhost:5000"\n', "ui_url must be an http(s) URL"),
    ],
)
def test_nb_mlops_toml_problems_are_named_with_the_file(
    tmp_path: Path, body: str, named: str
) -> None:
    (tmp_path / "nb_mlops.toml").write_text(body)
    cfg = load_config(tmp_path)
    assert len(cfg.problems) == 1
    assert cfg.problems[0].startswith(f"{tmp_path / 'nb_mlops.toml'}: ")
    assert named in cfg.problems[0]


def test_config_check_prints_one_line_per_problem_and_exits_1(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pyproject(
        project,
        'experimnt = "x"\nstep_timeout = "soon"\n[tool.nb_mlops.gates]\n'
        'metrics = { accuracy = ">= high", loss = "<= 0.3" }\nrequire_reproduced = "yes"\n',
    )
    assert main(["config", "--check"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    for key in ("experimnt", "step_timeout", "metrics.accuracy", "require_reproduced"):
        assert sum(key in line for line in err) == 1, key
    # `config --json` still shows the raw table and the problems
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["problems"]) == 4
    # and a valid configuration is ok
    _pyproject(project, RIGHT)
    assert main(["config", "--check"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_promote_magic_refuses_on_a_configuration_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_pipeline_run(pipeline="churn", metrics={"accuracy": 0.973})
    _pyproject(project, '[tool.nb_mlops.gate]\nmetrics = { accuracy = ">= 0.9999" }\n')
    ip = InteractiveShell.instance()
    ip.register_magics(PromoteMagics)
    with pytest.raises(UsageError, match=r"did you mean `tool\.nb_mlops\.gates`"):
        ip.run_line_magic("promote", f"{run} --model churn --yes")
    assert "PROMOTED" not in capsys.readouterr().out
    assert nb_mlops.history("churn") == []


# --- properties -------------------------------------------------------------------------------

_names = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
_ops = st.sampled_from([">=", ">", "<=", "<", "=="])
_finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
_threshold = st.builds(lambda op, x, sp: f"{op}{' ' * sp}{x!r}", _ops, _finite, st.integers(0, 2))
_valid_gates = st.fixed_dictionaries(
    {},
    optional={
        "metrics": st.dictionaries(_names, _threshold, max_size=4),
        "beat_champion": st.one_of(
            st.just(False),
            st.fixed_dictionaries(
                {"metric": _names},
                optional={
                    "min_delta": _finite,
                    "direction": st.sampled_from(["max", "min"]),
                    "require_same_snapshot": st.booleans(),
                },
            ),
        ),
        "require_reproduced": st.booleans(),
        "require_data_verified": st.booleans(),
    },
)
_text = st.text(string.ascii_letters + "-_", min_size=1, max_size=20)
_valid = st.fixed_dictionaries(
    {},
    optional={
        "experiment": _text,
        "model": _text,
        "ui_url": _text.map(lambda t: f"https://{t}"),
        "reproduce_tolerance": st.floats(0, 1),
        "step_timeout": st.floats(0.1, 1e6),
        "step_memory_limit_mb": st.integers(1, 10**6),
        "write_retry_seconds": st.floats(0, 1e3),
        "gates": _valid_gates,
    },
)
# values of a type no key accepts: tables where scalars belong and the reverse
_junk = st.one_of(st.lists(st.integers(), max_size=2), st.none(), st.just(math.nan))


@settings(max_examples=200, deadline=None)
@given(_valid)
def test_valid_configurations_have_no_problems_and_parse(table: dict[str, Any]) -> None:
    assert problems(table) == []
    spec = parse_gates(table.get("gates", {}))
    assert len(spec.metrics) == len(table.get("gates", {}).get("metrics", {}))


@settings(max_examples=200, deadline=None)
@given(_valid, _names)
def test_an_unknown_key_is_exactly_one_problem_naming_it(table: dict[str, Any], key: str) -> None:
    if key in TOP_KEYS:
        return
    found = problems({**table, key: 1}, "tool.nb_mlops.")
    assert len(found) == 1 and found[0].startswith(f"tool.nb_mlops.{key} is not a known key")


@settings(max_examples=300, deadline=None)
@given(_valid, st.sampled_from(sorted(TOP_KEYS)), _junk)
def test_a_wrong_type_for_any_key_is_a_problem_naming_it(
    table: dict[str, Any], key: str, junk: Any
) -> None:
    found = problems({**table, key: junk})
    assert len(found) == 1 and found[0].startswith(key), found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _valid_gates,
    st.sampled_from(sorted(GATE_KEYS)),
    st.one_of(_junk, _text, st.integers(), st.dictionaries(_names, _text, max_size=2)),
)
def test_parse_gates_refuses_exactly_what_the_schema_refuses(
    gates: dict[str, Any], key: str, value: Any
) -> None:
    table = {**gates, key: value}
    found = problems({"gates": table})
    try:
        parse_gates(table)
    except ConfigError as exc:
        assert found and str(exc).startswith(found[0]), (found, exc)
    else:
        assert found == []


# --- every key the code reads is declared ---------------------------------------------------------

# tornado's Application.settings, not ours
_NOT_OURS = {Path("server/handlers.py"), Path("server/__init__.py"), Path("server/app.py")}


def _keys_read(path: Path) -> set[str]:
    """`<x>.settings.get("k")`, `settings.get("k")` and `<x>.settings["k"]` in one file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        target = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            target, key = node.func.value, node.args[0]
        elif isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        if target is None:
            continue
        named = (isinstance(target, ast.Attribute) and target.attr == "settings") or (
            isinstance(target, ast.Name) and target.id == "settings"
        )
        if named and isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.add(key.value)
    return found


def test_every_setting_the_code_reads_is_in_the_schema() -> None:
    package = Path(nb_mlops.__file__).parent
    read: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package) in _NOT_OURS:
            continue
        for key in _keys_read(path):
            read.setdefault(key, []).append(str(path.relative_to(package)))
    assert "gates" in read or "model" in read  # the scan finds the known readers
    undeclared = {key: files for key, files in read.items() if key not in TOP_KEYS}
    assert not undeclared, f"add these keys to nb_mlops/core/config_schema.py: {undeclared}"


# --- the server: the Promote dialog shows the problem, a promote job refuses before running ---

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_root_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import os

    # pytest-jupyter points HOME at a temp folder: keep using the machine's schema template
    monkeypatch.setenv(
        "XDG_CACHE_HOME", os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    )
    from nbutil import new_notebook

    root = tmp_path / "root"
    root.mkdir()
    _pyproject(root, 'model = "demo-model"\n[tool.nb_mlops.gate]\nmetrics = { acc = ">= 0.9" }\n')
    new_notebook(root / "nb" / "train.ipynb", [("alpha: float = 0.5", ["parameters"]), "1"])
    return root


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"nb_mlops.server": True}}}


async def test_server_describes_the_problem_and_a_promote_job_refuses_before_running(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    import asyncio
    import time

    api = ("nb-mlops", "api")
    info = json.loads((await jp_fetch(*api, "notebook", params={"path": "nb/train.ipynb"})).body)
    assert info["gates"] == []
    assert len(info["config_errors"]) == 1
    assert "did you mean `tool.nb_mlops.gates`?" in info["config_errors"][0]
    body = {"path": "nb/train.ipynb", "action": "promote", "parameters": {}}
    job = json.loads((await jp_fetch(*api, "jobs", method="POST", body=json.dumps(body))).body)
    deadline = time.monotonic() + 120
    while job["status"] in ("QUEUED", "RUNNING") and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        job = json.loads((await jp_fetch(*api, "jobs", job["id"])).body)
    assert job["status"] == "FAILED", job
    assert "did you mean `tool.nb_mlops.gates`?" in job["error"]
    # nothing was built or run
    assert not (jp_root_dir / ".nb_mlops" / "jobs" / job["id"] / "pipeline").exists()
    assert not (jp_root_dir / ".nb_mlops" / "runs").exists() or not any(
        (jp_root_dir / ".nb_mlops" / "runs").iterdir()
    )
