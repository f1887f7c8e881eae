"""`require_reproduced` compares a pipeline run with the interactive run that used the same
parameter values, and says which run, which metric, both values and the tolerance, or plainly
that no interactive run used those values. Real pipeline runs, real tracked runs, real store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from nbutil import new_notebook

from nb_mlops.core import tracking
from nb_mlops.core.capture.notebook import format_param
from nb_mlops.core.config import load_config
from nb_mlops.core.promotion.gates import evaluate_gates, parse_gates
from nb_mlops.core.promotion.registry import run_facts
from nb_mlops.core.store import client
from nb_mlops.pipeline import build_pipeline, run_pipeline
from nb_mlops.pipeline.repro import same_value

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)


def _texts(value: Any) -> tuple[str, str]:
    """How a parameter is recorded: as %%track writes it, as the runner writes it."""
    return format_param(value), value if isinstance(value, str) else json.dumps(value)


@given(value=values, other=values)
@example(value=[False, False, []], other=[False, 0, []])  # a bool is not a number, at any depth
def test_a_recorded_parameter_stands_for_its_value_and_no_other(value: Any, other: Any) -> None:
    for text in _texts(value):
        assert same_value(text, value)
        # another value matches only if it is equal, or recorded would read exactly the same
        if same_value(text, other):
            assert _equal(value, other) or text in _texts(other), (text, value, other)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and bool not in (type(a), type(b)):
        return math.isclose(a, b, rel_tol=0, abs_tol=0) or a == b
    return type(a) is type(b) and a == b


def _interactive(notebook: Path, C: float, accuracy: float) -> str:
    """A tracked run of the notebook, as `%%track` makes it, with the parameter value C."""
    namespace: dict[str, Any] = {"C": C}
    tracking.bind_kernel(namespace)
    try:
        with tracking.track(name=f"interactive-{C}", autolog=False) as run:
            tracking.log(accuracy=accuracy)
        tracking.flush()
    finally:
        tracking.bind_kernel(None)
    return run.run_id


def _gate(run_id: str) -> Any:
    facts = run_facts(client(load_config()).get_run(run_id))
    return evaluate_gates(parse_gates({"require_reproduced": True}), facts)[0]


def test_the_gate_compares_with_the_run_of_the_same_parameters_and_says_why(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a notebook whose metric is its parameter C
    notebook = new_notebook(
        project / "repro.ipynb",
        [
            ("C: float = 1.0", ["parameters"]),
            ("import nb_mlops\nnb_mlops.log(accuracy=C)", ["step:train"]),
        ],
    )
    build_pipeline(notebook)
    monkeypatch.setenv("NB_MLOPS_NOTEBOOK", str(notebook.resolve()))
    monkeypatch.setenv("NB_MLOPS_EXPERIMENT", "repro")
    _interactive(notebook, 1.0, 1.0)
    monkeypatch.delenv("NB_MLOPS_NOTEBOOK")

    # When the pipeline runs with a value no interactive run used
    first = run_pipeline("repro", {"C": 0.5}, cache=False)
    # Then the gate fails and says so plainly, naming both parameter sets
    gate = _gate(first.run_id)
    assert gate.verdict == "FAIL"
    assert gate.detail.startswith(
        "no interactive run of the notebook used these parameter values (C=0.5); "
        "the newest one used C=1.0"
    )

    # When the notebook is tracked with that value, but its metric came out differently
    monkeypatch.setenv("NB_MLOPS_NOTEBOOK", str(notebook.resolve()))
    _interactive(notebook, 0.5, 0.5)
    differing = _interactive(notebook, 0.5, 0.45)
    monkeypatch.delenv("NB_MLOPS_NOTEBOOK")
    second = run_pipeline("repro", {"C": 0.5}, cache=False)
    # Then the newest run of the same parameters is compared, naming metric, values, tolerance
    gate = _gate(second.run_id)
    assert (gate.verdict, gate.detail) == (
        "FAIL",
        f"accuracy: pipeline 0.5 vs interactive 0.45 (interactive run {differing} (same "
        "parameters: C=0.5)), beyond the tolerance rel 1e-06 + abs 1e-09 "
        "(reproduction.json lists every metric)",
    )
    # And a run at the other value reproduces its own interactive run
    third = run_pipeline("repro", {"C": 1.0}, cache=False)
    gate = _gate(third.run_id)
    assert gate.verdict == "PASS"
    assert gate.detail.endswith("(same parameters: C=1.0) within rel 1e-06 + abs 1e-09")
