"""`make setup` rebuilds the labextension bundle only when its TypeScript side changed: a change to
pyproject.toml or constraints.txt reinstalls without dropping the bundle (so without node).
Checked with `make -n` (what make would run) on a copy of the Makefile and stamped files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = (
    "pyproject.toml",
    "constraints.txt",
    "labextension/package.json",
    "labextension/yarn.lock",
    "labextension/tsconfig.json",
    "labextension/src/index.ts",
    "labextension/style/base.css",
)
DROP_BUNDLE = "rm -rf nb_mlops/labextension"
INSTALL = "pip install -q -c constraints.txt -e"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout whose venv was set up after every source was last changed."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for name in SOURCES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
        os.utime(tmp_path / name, (1_000, 1_000))
    (tmp_path / "nb_mlops" / "labextension").mkdir(parents=True)
    (tmp_path / ".venv").mkdir()
    for stamp, when in ((".labextension-sources", 2_000), (".installed", 3_000)):
        (tmp_path / ".venv" / stamp).touch()
        os.utime(tmp_path / ".venv" / stamp, (when, when))
    return tmp_path


def _planned(checkout: Path, changed: str | None) -> str:
    if changed is not None:
        os.utime(checkout / changed, (5_000, 5_000))
    done = subprocess.run(
        ["make", "-n", "setup"], cwd=checkout, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_nothing_changed_nothing_runs(checkout: Path) -> None:
    assert DROP_BUNDLE not in _planned(checkout, None)
    assert INSTALL not in _planned(checkout, None)


@pytest.mark.parametrize("changed", ["pyproject.toml", "constraints.txt"])
def test_python_side_changes_reinstall_but_keep_the_bundle(checkout: Path, changed: str) -> None:
    planned = _planned(checkout, changed)
    assert INSTALL in planned
    assert DROP_BUNDLE not in planned


@pytest.mark.parametrize("changed", [s for s in SOURCES if s.startswith("labextension/")])
def test_typescript_side_changes_rebuild_the_bundle(checkout: Path, changed: str) -> None:
    planned = _planned(checkout, changed)
    assert planned.index(DROP_BUNDLE) < planned.index(INSTALL)
