"""Shared fixtures: every test gets its own project folder and a clean environment."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

# A shell without job control starts background commands with SIGINT ignored, and an ignored
# signal stays ignored in every process started from here: the interrupt tests (Ctrl-C to a
# runner's group, the interrupt button of `%pipeline run`) need it delivered as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_OVERRIDES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> object:
    """No test sees the developer's tracking server or a pipeline step's variables, nor what an
    earlier test (or MLflow's `set_tracking_uri` in it) exported."""
    for name in list(os.environ):
        if name.startswith("NB_MLOPS_") or name in _OVERRIDES:
            monkeypatch.delenv(name, raising=False)
    yield
    for name in _OVERRIDES:
        os.environ.pop(name, None)


@pytest.fixture(autouse=True)
def _no_active_run_left() -> object:
    """Fail any test that leaves an MLflow run active in this process (as MLflow's suite does)."""
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        run_id = mlflow.active_run().info.run_id
        mlflow.end_run()
        pytest.fail(f"test left MLflow run {run_id} active")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project root (pyproject.toml with [tool.nb_mlops]) as the working directory."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n\n[tool.nb_mlops]\n')
    monkeypatch.chdir(root)
    return root
