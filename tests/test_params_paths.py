"""Parameter values on every path: the command line, `--production` and the step notebooks.

Every path reads command-line values with one function (`params.parse_cli_values`), so a value is
refused the same way everywhere; a step notebook shows the values it ran with where papermill
users look for them (`metadata.papermill.parameters`).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbutil import new_notebook

import nb_mlops
from nb_mlops.cli import main
from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import ParameterError
from nb_mlops.pipeline import build_pipeline, run_pipeline
from nb_mlops.pipeline.params import parse_cli_values

SCHEMA = {
    "C": {"type": "float", "default": 1.0},
    "label": {"type": "str", "default": "x"},
    "extra": {"type": "any", "default": None},
}

FIT = """%%track -n fit
from sklearn.linear_model import LogisticRegression
model = LogisticRegression(C=C).fit(X, y)
nb_mlops.log(accuracy=model.score(X, y))
"""


def _churn(root: Path) -> Path:
    return new_notebook(
        root / "churn.ipynb",
        [
            ("C: float = 1.0\nlabel = 'x'\ntexts: list[str] = []", ["parameters"]),
            "import numpy as np\nimport nb_mlops\nrng = np.random.RandomState(0)\n"
            "X = rng.randn(60, 3)\ny = (X[:, 0] > 0).astype(int)",
            FIT,
        ],
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"text": {"C": "abc"}}, "parameter `C` expects float, got 'abc' (str)"),
        ({"typed": {"C": "0.5"}}, "parameter `C` expects float, got '0.5' (str)"),
        ({"raw": {"C": "[1]"}}, "parameter `C` expects float, got '[1]' (str)"),
        ({"text": {"D": "1"}}, "unknown parameter 'D'"),
    ],
)
def test_a_command_line_value_that_does_not_fit_is_refused_naming_it(
    given: dict, message: str
) -> None:
    # Given a float parameter C, When a value that is not a float (or an unknown name) is given
    with pytest.raises(ParameterError) as info:
        parse_cli_values(SCHEMA, **given)
    # Then one line names the parameter, the value and the expected type
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_command_line_text_is_typed_and_raw_text_of_an_untyped_parameter_stays_text() -> None:
    values = parse_cli_values(
        SCHEMA, typed={"label": "y"}, text={"C": "0.5"}, raw={"extra": "3", "label": "7"}
    )
    assert values == {"C": 0.5, "extra": "3", "label": "7"}


def test_step_notebook_shows_the_values_it_ran_with_in_papermills_metadata(
    project: Path,
) -> None:
    # Given a pipeline with a float, a str and a list parameter
    build_pipeline(_churn(project))
    # When it runs with C and texts given
    run = run_pipeline("churn", {"C": 0.5, "texts": ["a", "b"]})
    assert run.succeeded, run.error
    # Then its step notebook records every value, readable, next to the runner's context
    (step,) = run.steps
    nb = nbformat.read(run.run_dir / f"{step}.ipynb", as_version=4)
    shown = nb.metadata["papermill"]["parameters"]
    assert {k: v for k, v in shown.items() if k != "nb_mlops_context"} == {
        "C": 0.5,
        "label": "x",
        "texts": ["a", "b"],
    }
    assert shown["nb_mlops_context"]


def test_production_run_checks_values_as_a_normal_run_does_before_running(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a pipeline run promoted to champion of `churn`
    build_pipeline(_churn(project))
    first = run_pipeline("churn", {"C": 0.5})
    assert first.succeeded, first.error
    nb_mlops.promote(first.run_id, model="churn")
    errors = {}
    for args in (["-p", "C=abc"], ["-y", "C: '0.5'"], ["-p", "D=1"]):
        # When a value that does not fit is given to a normal run and to a production run
        assert main(["pipeline", "run", "churn", *args]) == 1
        normal = capsys.readouterr().err.splitlines()[-1]
        assert main(["pipeline", "run", "--production", "churn", *args]) == 1
        # (MLflow's download progress comes first: the stored pipeline is fetched to check them)
        errors[args[1]] = capsys.readouterr().err.splitlines()[-1]
        # Then both refuse it with the same one line naming it
        assert errors[args[1]] == normal, args
        assert normal.startswith("error: ")
    assert errors["C=abc"] == "error: parameter `C` expects float, got 'abc' (str)"
    # And no production run started
    client = store.client(load_config())
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not client.search_runs(experiments, "tags.`nb_mlops.mode` = 'production'")
