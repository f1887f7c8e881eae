"""Names are validated by full matches: `$` also matches before a final newline, so `^name$` with
`re.match` accepts `'name\\n'` (a model version was registered under such a name). Every
validator of the package refuses a trailing newline, and no pattern of the package ends in `$`."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nb_mlops"
_RE_CALLS = {"compile", "match", "search", "fullmatch", "sub", "split", "findall", "finditer"}


def _ends_with_dollar(pattern: str) -> bool:
    backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
    return pattern.endswith("$") and backslashes % 2 == 0


def _anchored_patterns() -> list[str]:
    """`file:line pattern` of every literal regex passed to `re.*` that ends in an unescaped `$`."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.func.attr in _RE_CALLS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                continue
            if node.func.attr != "fullmatch" and _ends_with_dollar(node.args[0].value):
                where = path.relative_to(PACKAGE.parent)
                found.append(f"{where}:{node.lineno} {node.args[0].value!r}")
    return found


def test_no_pattern_of_the_package_ends_in_a_dollar() -> None:
    # Given every regex literal of the package; Then none relies on `$` to end a match
    assert _anchored_patterns() == [], "end these patterns with \\Z (or use re.fullmatch)"


def _job_file(tmp: Path, job_id: str) -> Any:
    from nb_mlops.server.jobs import read_job

    (tmp / f"{job_id}.json").write_text(json.dumps({"id": job_id, "status": "QUEUED"}))
    return read_job(tmp, job_id)


def _build_named(tmp: Path, name: str) -> Any:
    from nb_mlops.pipeline import build_pipeline
    from tests.nbutil import new_notebook

    (tmp / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    nb = new_notebook(tmp / "nb.ipynb", ["x = 1"])
    return build_pipeline(nb, name=name, output=tmp / "out")


def _server_model(name: str) -> Any:
    from nb_mlops.server.handlers import _model_name

    return _model_name(name)


def _regex(module: str, attr: str) -> Callable[[Path, str], Any]:
    def check(_tmp: Path, value: str) -> Any:
        import importlib

        pattern = getattr(importlib.import_module(module), attr)
        if pattern.match(value) is None:
            raise ValueError(f"{value!r} refused")
        return value

    return check


def _call(module: str, attr: str) -> Callable[[Path, str], Any]:
    def check(_tmp: Path, value: str) -> Any:
        import importlib

        return getattr(importlib.import_module(module), attr)(value)

    return check


# (what, validator(tmp, value), a valid value): each must refuse the valid value plus "\n"
VALIDATORS: list[tuple[str, Callable[[Path, str], Any], str]] = [
    ("server model name", lambda _t, v: _server_model(v), "nl"),
    ("server job id", _job_file, "20250101T000000-deadbeef"),
    ("step name (tags)", _regex("nb_mlops.pipeline.grammar", "STEP_NAME"), "load"),
    ("step name (%%step)", _regex("nb_mlops.magics.pipeline", "_STEP_NAME"), "load"),
    ("pipeline name", _build_named, "train"),
    ("executor spec", _call("nb_mlops.pipeline.executors", "check_spec"), "dask://host:8786"),
    ("registry model name", _call("nb_mlops.core.promotion.registry", "check_model_name"), "m"),
    ("registry run id", _call("nb_mlops.core.promotion.registry", "check_run_id"), "abc123"),
    (
        "registry pipeline name",
        lambda _t, v: _latest_run(v),
        "train",
    ),
    ("snapshot name", _call("nb_mlops.core.data.names", "check_name"), "train"),
    # a model reference is stripped first (surrounding blanks are layout): a newline inside
    (
        "model reference",
        lambda _t, v: _call("nb_mlops.core.lineage", "parse_ref")(_t, v + "x"),
        "m",
    ),
]


def _latest_run(pipeline: str) -> Any:
    from nb_mlops.core.promotion.registry import latest_pipeline_run

    class NoStore:  # reached only once the name is accepted
        def search_experiments(self) -> list[Any]:
            return []

        def search_runs(self, *args: Any, **kwargs: Any) -> list[Any]:
            return []

    try:
        return latest_pipeline_run(NoStore(), pipeline)  # type: ignore[arg-type]
    except Exception as exc:
        if "is not a pipeline name" in str(exc):
            raise
        return pipeline  # accepted: it failed later, for want of runs


@pytest.mark.parametrize(("what", "validator", "valid"), VALIDATORS, ids=[v[0] for v in VALIDATORS])
def test_every_name_validator_refuses_a_trailing_newline(
    tmp_path: Path, what: str, validator: Callable[[Path, str], Any], valid: str
) -> None:
    # Given a value the validator accepts
    validator(tmp_path, valid)
    # When a newline follows it, Then it is refused
    with pytest.raises(Exception) as info:
        validator(tmp_path, valid + "\n")
    assert not isinstance(info.value, AssertionError)
    assert re.search(r"not|invalid|refused|no job|unknown", str(info.value)), info.value
