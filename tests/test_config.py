"""Configuration: where the project root is, what overrides the store, what `config --json` says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nb_mlops.core.config import load_config
from nb_mlops.core.errors import ConfigError


def test_root_is_nearest_pyproject_with_tool_table(project: Path) -> None:
    # Given a notebook folder two levels below a project root
    nested = project / "a" / "b"
    nested.mkdir(parents=True)
    # When the configuration is resolved from there
    cfg = load_config(nested)
    # Then the root and the embedded store are the project's
    assert cfg.root == project
    assert cfg.config_file == project / "pyproject.toml"
    assert cfg.tracking_uri == f"sqlite:///{project}/.nb_mlops/mlflow.db"
    assert cfg.registry_uri == cfg.tracking_uri
    assert cfg.artifact_root == str(project / ".nb_mlops" / "artifacts")
    assert cfg.data_store == project / ".nb_mlops" / "data"
    assert cfg.is_embedded


def test_pyproject_without_tool_table_is_not_a_root(tmp_path: Path) -> None:
    # Given an inner pyproject.toml without [tool.nb_mlops] below an nb_mlops.toml project
    (tmp_path / "nb_mlops.toml").write_text('experiment = "churn"\n')
    inner = tmp_path / "pkg"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "pkg"\n')
    # When resolved from the inner folder
    cfg = load_config(inner)
    # Then the outer nb_mlops.toml wins and its keys are read
    assert cfg.root == tmp_path
    assert cfg.experiment == "churn"


def test_no_config_file_means_the_start_folder(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.root == tmp_path
    assert cfg.config_file is None


@pytest.mark.parametrize("variable", ["NB_MLOPS_TRACKING_URI", "MLFLOW_TRACKING_URI"])
def test_environment_overrides_the_store(
    project: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "http://127.0.0.1:5999")
    cfg = load_config()
    assert cfg.tracking_uri == "http://127.0.0.1:5999"
    assert cfg.registry_uri == "http://127.0.0.1:5999"
    assert not cfg.is_embedded


def test_nb_mlops_variable_wins_over_mlflow_variable(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.invalid")
    monkeypatch.setenv("NB_MLOPS_TRACKING_URI", "http://127.0.0.1:5999")
    assert load_config().tracking_uri == "http://127.0.0.1:5999"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "nb_mlops.toml").write_text("experiment = [unclosed\n")
    with pytest.raises(ConfigError, match="nb_mlops.toml: invalid TOML"):
        load_config(tmp_path)


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    (tmp_path / "nb_mlops.toml").write_text("experiment = 3\n")
    with pytest.raises(ConfigError, match=r"`experiment` must be a non-empty string, got 3"):
        load_config(tmp_path)


def test_cli_config_json_has_the_documented_keys(project: Path) -> None:
    # When `nb-mlops config --json` runs in the project
    out = subprocess.run(
        [sys.executable, "-m", "nb_mlops.cli", "config", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    values = json.loads(out)
    # Then it names the resolved root and store
    for key in (
        "root",
        "tracking_uri",
        "registry_uri",
        "artifact_root",
        "data_store",
        "experiment",
    ):
        assert key in values
    assert values["root"] == str(project)
    assert values["tracking_uri"].endswith("/.nb_mlops/mlflow.db")


def test_cli_error_is_one_line_with_status_1(tmp_path: Path) -> None:
    (tmp_path / "nb_mlops.toml").write_text("experiment = [unclosed\n")
    done = subprocess.run(
        [sys.executable, "-m", "nb_mlops.cli", "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: ") and "invalid TOML" in done.stderr


def test_cli_exit_status_of_a_command_is_kept() -> None:
    import click

    from nb_mlops import cli

    @click.command()
    def failing() -> None:
        click.get_current_context().exit(3)

    cli.cli.add_command(failing, "failing-for-test")
    try:
        assert cli.main(["failing-for-test"]) == 3
    finally:
        cli.cli.commands.pop("failing-for-test", None)
