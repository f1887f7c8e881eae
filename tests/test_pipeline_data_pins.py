"""Data pins for real pipeline runs: `run_pipeline(..., data={"train": "batch@v1"})` makes the
steps' `restore("train")` and `%restore train` read `batch@v1`; the lineage names it; the pins
are recorded, part of the step cache key and kept by resume; a bad pin fails before any step."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nb_mlops.cli import main
from nb_mlops.core.config import load_config
from nb_mlops.core.data import snapshot
from nb_mlops.core.data.pins import parse_pin
from nb_mlops.core.errors import DataError, PipelineError
from nb_mlops.core.store import client, experiment_id
from nb_mlops.pipeline import build_pipeline, run_pipeline
from nb_mlops.pipeline.runner import PipelineRun
from tests.nbutil import new_notebook

CELLS = [
    ("import nb_mlops", ["imports"]),
    ("df = nb_mlops.restore('train')\ntotal = float(df['v'].sum())", ["step:load"]),
    (
        "%restore train --as again\nsame = 1.0 if float(again['v'].sum()) == total else 0.0",
        ["step:check"],
    ),
    ("print(total, same)", ["pipeline-metrics"]),
]


def _frame(*values: float) -> pd.DataFrame:
    # the project's path in the data: this process's pending writes are known by snapshot name
    # and digest only, so an equal frame in an earlier test's project would count as stored
    return pd.DataFrame({"v": list(values), "at": [str(Path.cwd())] * len(values)})


@pytest.fixture()
def pinned_project(project: Path) -> Path:
    """`train` v1 (sum 3) and v2 (sum 10), `batch` v1 (sum 105), and the pipeline `pins`."""
    snapshot(_frame(1.0, 2.0), "train", wait=True)
    snapshot(_frame(10.0), "train", wait=True)
    snapshot(_frame(100.0, 5.0), "batch", wait=True)
    build_pipeline(new_notebook(project / "pins.ipynb", CELLS))
    return project


def _step_run(run: PipelineRun, step: str):  # noqa: ANN202 - an MLflow Run
    return client(load_config()).get_run(str(run.steps[step].run_id))


def _ran(run: PipelineRun, total: float) -> None:
    assert run.status == "SUCCEEDED", run.error
    assert run.metrics["total"] == total and run.metrics["same"] == 1.0


def test_a_pinned_run_reads_the_pinned_version_and_its_lineage_names_it(
    pinned_project: Path,
) -> None:
    # Given a pipeline whose steps restore `train` by name
    # When it runs unpinned, then pinned to another snapshot's version
    plain = run_pipeline("pins")
    pinned = run_pipeline("pins", data={"train": "batch@v1"})
    # Then the unpinned run read the latest `train`, the pinned one `batch@v1` (both steps:
    # `nb_mlops.restore` and `%restore`)
    _ran(plain, 10.0)
    _ran(pinned, 105.0)
    assert plain.data_pins == {} and pinned.data_pins == {"train": "batch@v1"}
    # the step's run records the pinned version as its dataset input, as a normal restore does
    load = _step_run(pinned, "load")
    (used,) = load.inputs.dataset_inputs
    assert used.dataset.name == "batch" and "batch@v1" in used.dataset.source
    assert load.data.tags["nb_mlops.data.batch"].startswith("v1:")
    assert "nb_mlops.data.train" not in load.data.tags
    assert _step_run(plain, "load").data.tags["nb_mlops.data.train"].startswith("v2:")
    # the parent run and the state file record the pins
    parent = client(load_config()).get_run(pinned.run_id)
    assert json.loads(parent.data.tags["nb_mlops.data_pins"]) == {"train": "batch@v1"}
    assert "nb_mlops.data_pins" not in client(load_config()).get_run(plain.run_id).data.tags
    state = json.loads((pinned.run_dir / "state.json").read_text())
    assert state["data_pins"] == {"train": "batch@v1"}
    # and no step was reused across different pins; the same pins meet in the cache
    assert not any(s.cached for s in pinned.steps.values())
    other = run_pipeline("pins", data={"train": "train@v1"})
    _ran(other, 3.0)
    assert not any(s.cached for s in other.steps.values())
    again = run_pipeline("pins", data={"train": "batch@v1"})
    _ran(again, 105.0)
    assert all(s.cached for s in again.steps.values())


@pytest.mark.parametrize(
    ("pin", "says"),
    [
        ({"train": "batch@v9"}, "data pin train=batch@v9: no version 9 of snapshot 'batch'"),
        ({"train": "nope@v1"}, "data pin train=nope@v1: no snapshot named 'nope'"),
        ({"train": "batch"}, "data pin train=batch: name a version"),
    ],
)
def test_a_bad_pin_fails_before_any_step(pinned_project: Path, pin: dict, says: str) -> None:
    cfg = load_config()
    exp = experiment_id(cfg, "pins")
    before = client(cfg).search_runs([exp])
    with pytest.raises(PipelineError, match=says) as raised:
        run_pipeline("pins", data=pin)
    assert len(str(raised.value).splitlines()) == 1
    assert "nb-mlops data list" in str(raised.value) or "name a version" in str(raised.value)
    # nothing ran: no MLflow run, no run folder
    assert len(client(cfg).search_runs([exp])) == len(before)
    assert not list((cfg.runs_dir / "pins").glob("*/state.json"))


def test_resume_keeps_the_pins(pinned_project: Path) -> None:
    first = run_pipeline("pins", data={"train": "batch@v1"})
    _ran(first, 105.0)
    resumed = run_pipeline("pins", resume=first.run_id)
    assert resumed.data_pins == {"train": "batch@v1"}
    _ran(resumed, 105.0)
    with pytest.raises(PipelineError, match="resume it without --data"):
        run_pipeline("pins", resume=first.run_id, data={"train": "train@v1"})


def test_the_cli_pins_with_data(pinned_project: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["pipeline", "run", "pins", "--json", "--data", "train=batch@v1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["data_pins"] == {"train": "batch@v1"}
    assert out["metrics"]["total"] == 105.0
    # NAME@vN pins NAME to that version
    code = main(["pipeline", "run", "pins", "--json", "--data", "train@v1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["data_pins"] == {"train": "train@v1"}
    assert out["metrics"]["total"] == 3.0
    # bad syntax: a click error naming the option, nothing runs
    code = main(["pipeline", "run", "pins", "--data", "train=batch"])
    err = capsys.readouterr().err
    assert code == 2 and "Invalid value for '--data': data pin train=batch" in err
    # a pin naming a missing version: one error line
    code = main(["pipeline", "run", "pins", "--data", "train=batch@v7"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: data pin train=batch@v7: no version 7")
    assert "--data" in main_help(capsys)


def main_help(capsys: pytest.CaptureFixture) -> str:
    assert main(["pipeline", "run", "--help"]) == 0
    return str(capsys.readouterr().out)


def test_parse_pin_forms() -> None:
    assert parse_pin("train=batch@v3") == ("train", "batch@v3")
    assert parse_pin("train@v2") == ("train", "train@v2")
    for bad in ("train", "train=batch", "=x@v1", "train=batch@v0"):
        with pytest.raises(DataError, match="NAME=OTHER@vN or NAME@vN"):
            parse_pin(bad)


def test_retrain_pins_point_the_restored_name_at_the_new_data() -> None:
    from nb_mlops.pipeline.retrain import retrain_pins

    assert retrain_pins("batch@v2", "train@v1") == {"train": "batch@v2"}
    assert retrain_pins("train@v2", "train@v1") == {"train": "train@v2"}
    assert retrain_pins("batch@v2", None) == {"batch": "batch@v2"}
    assert retrain_pins("batch", "train@v1") == {}  # no version: nothing to pin
    # a champion trained re-pointed (train → batch@v1) is re-pointed on the name it restores
    assert retrain_pins("batch@v2", "batch@v1", {"train": "batch@v1"}) == {"train": "batch@v2"}


def test_a_cached_step_that_restored_the_latest_version_reruns_when_a_newer_one_exists(
    pinned_project: Path,
) -> None:
    # Given an unpinned run whose steps restored the latest `train` (v2, sum 10), cached
    first = run_pipeline("pins")
    _ran(first, 10.0)
    assert all(s.cached for s in run_pipeline("pins").steps.values())
    # When a newer version of `train` is snapshotted
    snapshot(_frame(7.0, 7.0), "train", wait=True)
    # Then the steps that read `train` run again, on the new version, and cache again
    fresh = run_pipeline("pins")
    _ran(fresh, 14.0)
    assert not any(s.cached for s in fresh.steps.values())
    assert all(s.cached for s in run_pipeline("pins").steps.values())
