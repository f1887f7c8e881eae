"""`nb-mlops demo` as a new user runs it: from an empty folder with no pyproject (what an installed
wheel meets). The quickstart is tracked, snapshotted, pipelined and promoted into one store, the
champion's lineage reaches back to the data snapshot the pipeline's load step took, a shifted batch
is checked and the policy retrains through the gates, and the text is the demo's own (no
repository paths, no make)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def test_demo_in_an_empty_folder_promotes_the_quickstart_into_one_store(tmp_path: Path) -> None:
    # Given an empty folder
    project = tmp_path / "try-nb-mlops"
    project.mkdir()
    cli = [sys.executable, "-m", "nb_mlops.cli"]

    # When the demo runs there
    done = subprocess.run([*cli, "demo"], cwd=project, capture_output=True, text=True, timeout=900)

    # Then it succeeds, promoting the quickstart's random forest
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PROMOTED: breast-cancer version 1 is champion" in done.stdout
    # And the folder became the project: one store, at its root
    assert (project / "nb_mlops.toml").is_file()
    stores = sorted(p.relative_to(project) for p in project.rglob(".nb_mlops"))
    assert stores == [Path(".nb_mlops")]
    assert not list(project.rglob("mlruns")) and not list(project.rglob("mlflow.db"))[1:]
    # And the wording is the demo's own, with links to the runs list and the model page
    assert ".venv/bin" not in done.stdout and "make demo" not in done.stdout
    assert "/#/experiments/" in done.stdout and done.stdout.count("/runs") >= 1
    assert "/#/models/breast-cancer" in done.stdout

    def read_json(*args: str) -> Any:
        run = subprocess.run([*cli, *args], cwd=project, capture_output=True, text=True, check=True)
        return json.loads(run.stdout)

    lineage = read_json("lineage", "breast-cancer/1", "--json")
    assert lineage["version"] == "1"
    assert [d["name"] for d in lineage["data"]] == ["breast_cancer"]
    assert lineage["notebook"]["path"].endswith("notebooks/quickstart.ipynb")
    assert lineage["parameters"]["n_estimators"] == "100"
    # And every gate of the demo's config was judged, the data gate on a real snapshot; the
    # journal records the demo as the reason and how the model is stored
    history = read_json("history", "breast-cancer", "--json")
    first = history[0]
    verdicts = {gate["gate"]: gate["verdict"] for gate in first["gates"]}
    assert verdicts == {
        "metric:accuracy": "PASS",
        "metric:log_loss": "PASS",
        "beat_champion": "SKIP",
        "require_reproduced": "PASS",
        "require_data_verified": "PASS",
    }
    assert first["reason"] == "nb-mlops demo"
    assert first["model_safety"]["trusted_types"] == ["sklearn.tree._tree.Tree"]

    _the_loop_closed(done.stdout, history, read_json)


def _the_loop_closed(out: str, history: list[Any], read_json: Callable[..., Any]) -> None:
    """After promotion the shifted batch drifted, the policy retrained the production pipeline,
    and the gates judged the retrained model (a retrain of the same training data does not beat
    the champion: blocked, else promoted)."""
    assert "DRIFT: breast-cancer v1 on breast_cancer_batch@v1" in out
    (check,) = re.findall(r"check run ([0-9a-f]{32})", out)
    (retrained,) = re.findall(r"retrain +done +retraining run ([0-9a-f]{32}) SUCCEEDED", out)
    # the retraining run's lineage names the check that triggered it
    assert f"run {retrained} (mode production, pipeline of breast-cancer v1)" in out
    assert f"← triggered by check {check} on breast_cancer_batch@v1" in out
    # and the gates' decision on it is journaled with the check as its reason
    last = history[-1]
    assert last["action"] in ("promote", "blocked") and last["candidate_run"] == retrained
    assert f"check {check} found drift" in last["reason"]
    if last["action"] == "promote":
        assert (
            f"check {check} found drift"
            in read_json("lineage", "breast-cancer", "--json")["promotion"]["reason"]
        )
