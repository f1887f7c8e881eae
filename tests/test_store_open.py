"""Opening the embedded store fails fast and in one line on a broken `mlflow.db`, and never
re-creates one over it; `nb-mlops store init --force` is the explicit way to start again.

Given a project whose database is empty, foreign, garbage, truncated, half-migrated or read-only,
when any face opens the store, then it exits at once with one line naming the file and what to do
(never MLflow's minutes of retries), and the file is left exactly as it was.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sandbox
from hypothesis import given, settings
from hypothesis import strategies as st

import nb_mlops
from nb_mlops.core import store, tracking
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import StoreError


def _good_db(root: Path) -> bytes:
    """A real store with one run, closed (no WAL left), as bytes."""
    cfg = load_config(root)
    store.ensure_store(cfg)
    con = sqlite3.connect(cfg.db_path)
    con.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    con.close()
    return cfg.db_path.read_bytes()


def _foreign(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE precious (x)")
    con.execute("INSERT INTO precious VALUES (42)")
    con.commit()
    con.close()


def _empty_sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 1")  # a valid SQLite file with no table
    con.commit()
    con.close()


def _half_migrated(good: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(good)
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE _alembic_tmp_runs (x)")
        con.commit()
        con.close()

    return make


BROKEN: dict[str, tuple[Callable[[bytes], Callable[[Path], None]], str]] = {
    "zero-length": (lambda good: lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    "garbage": (
        lambda good: lambda p: p.write_bytes(os.urandom(len(good))),
        "is not an SQLite database",
    ),
    "truncated": (lambda good: lambda p: p.write_bytes(good[: len(good) // 2]), "is truncated"),
    "foreign": (lambda good: _foreign, "is not an MLflow database (its tables: precious)"),
    "empty sqlite": (lambda good: _empty_sqlite, "is an empty SQLite file"),
    "half-migrated": (_half_migrated, "is not a complete MLflow database (a half-finished"),
}


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("good")
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    with pytest.MonkeyPatch.context() as env:  # module scope: before the per-test clean-up
        for name in list(os.environ):
            if name.startswith(("NB_MLOPS_", "MLFLOW_")):
                env.delenv(name)
        return _good_db(root)


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_MLOPS_", "MLFLOW_"))}
    return subprocess.run(
        [sys.executable, "-m", "nb_mlops.cli", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # MLflow's own retries would take minutes
    )


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_database_is_refused_in_one_line_by_every_face_and_left_as_is(
    project: Path, good_db: bytes, case: str
) -> None:
    # Given a broken mlflow.db where the store's database belongs
    make, named = BROKEN[case]
    db = project / ".nb_mlops" / "mlflow.db"
    db.parent.mkdir()
    make(good_db)(db)
    before = db.read_bytes()
    # When the core, a tracked block and the CLI open the store
    with pytest.raises(
        StoreError, match="mlflow.db " + named.replace("(", r"\(").replace(")", r"\)")
    ):
        store.ensure_store(load_config())
    with (
        pytest.raises(StoreError, match="store init --force|restore it|move it"),
        nb_mlops.track(name="never", autolog=False),
    ):
        pass
    assert tracking.active_run_id() is None
    for args in (["runs"], ["store", "check"], ["store", "init"]):
        done = _cli(project, *args)
        # Then one line names the file and what to do, with no MLflow retry or traceback
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
        assert str(db) in done.stderr and named in done.stderr
    # And the file is exactly as it was: never re-created over
    assert db.read_bytes() == before


def test_store_init_force_moves_an_unusable_database_aside_and_starts_anew(
    project: Path, good_db: bytes
) -> None:
    db = project / ".nb_mlops" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    done = _cli(project, "store", "init", "--force")
    assert done.returncode == 0, done.stderr
    moved = [p for p in db.parent.iterdir() if p.name.startswith("mlflow.db.unusable-")]
    assert len(moved) == 1 and moved[0].read_bytes() == b""
    assert f"moved the unusable database to {moved[0]}" in done.stdout
    # the new store works
    with nb_mlops.track(name="after", autolog=False) as run:
        nb_mlops.log(x=1)
    tracking.flush()
    assert store.client(load_config()).get_run(run.run_id).data.metrics == {"x": 1.0}
    # and a usable database is never touched, even with --force
    before = db.read_bytes()
    assert _cli(project, "store", "init", "--force").returncode == 0
    assert db.read_bytes() == before
    assert len([p for p in db.parent.iterdir() if ".unusable-" in p.name]) == 1


@settings(max_examples=60, deadline=None)
@given(cut=st.floats(0.0, 0.999))
def test_any_truncation_is_refused(
    good_db: bytes, tmp_path_factory: pytest.TempPathFactory, cut: float
) -> None:
    path = tmp_path_factory.mktemp("cut") / "mlflow.db"
    path.write_bytes(good_db[: int(len(good_db) * cut)])
    problem = store.check_database(path)
    assert problem is not None and problem.startswith(str(path)) and "\n" not in problem


def test_a_healthy_database_passes_the_check(good_db: bytes, tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    path.write_bytes(good_db)
    assert store.check_database(path) is None
    assert store.check_database(tmp_path / "missing.db") is None


# --- read-only: a folder the test mounts read-only in a private namespace --------------------------


@pytest.fixture
def read_only_ok() -> None:
    reason = sandbox.unavailable()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)


def test_read_only_store_is_one_line_for_tracking_and_data_snapshot(
    project: Path, read_only_ok: None
) -> None:
    # Given a store with a run and a data version, then mounted read-only
    with nb_mlops.track(name="before", autolog=False):
        pass
    tracking.flush()
    (project / "f.txt").write_text("hello")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_MLOPS_", "MLFLOW_"))}
    store_dir = project / ".nb_mlops"
    track = (
        "import nb_mlops\nfrom nb_mlops.core.errors import NbMlopsError\ntry:\n"
        "    with nb_mlops.track(autolog=False): pass\n"
        "except NbMlopsError as exc:\n    raise SystemExit(f'error: {exc}')"
    )
    for args, named in (
        (["-m", "nb_mlops.cli", "store", "check"], f"{store_dir / 'mlflow.db'} is read-only"),
        (["-c", track], f"{store_dir / 'mlflow.db'} is read-only"),
        (
            ["-m", "nb_mlops.cli", "data", "snapshot", "f.txt"],
            f"cannot write to the data store {store_dir / 'data'}",
        ),
    ):
        done = sandbox.run(
            [sys.executable, *args],
            [sandbox.Mount.read_only(store_dir)],
            cwd=project,
            env=env,
            timeout=60,
        )
        # Then each face says so in one line, exit 1, no traceback
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
        assert named in done.stderr
