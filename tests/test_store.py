"""The embedded store: layout, schema at MLflow's head, WAL, safe reuse of existing files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import StoreError


def test_new_store_has_the_documented_layout_and_runs_in_wal(project: Path) -> None:
    # When a new project's store is opened
    cfg = store.ensure_store(load_config())
    # Then every folder of the store layout exists and the database is migrated, in WAL mode
    base = project / ".nb_mlops"
    for sub in ("artifacts", "data/objects", "data/refs", "runs", "locks"):
        assert (base / sub).is_dir(), sub
    con = sqlite3.connect(base / "mlflow.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()
    tmp_tables = con.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp_%'"
    ).fetchall()
    assert tmp_tables == []
    # And the default experiment keeps its artifacts inside the store, not in ./mlruns
    location = con.execute(
        "SELECT artifact_location FROM experiments WHERE experiment_id = 0"
    ).fetchone()[0]
    assert location == (base / "artifacts").resolve().as_uri() + "/0"
    assert cfg.db_path == base / "mlflow.db"


def test_experiments_and_runs_keep_artifacts_under_the_store(project: Path) -> None:
    cfg = store.ensure_store(load_config())
    client = store.client(cfg)
    # When an experiment is created through the store and a run logs an artifact
    exp = store.experiment_id(cfg, "churn model")
    assert store.experiment_id(cfg, "churn model") == exp  # idempotent
    run = client.create_run(exp)
    (project / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(project / "note.txt"))
    client.set_terminated(run.info.run_id)
    # Then the artifact lands in .nb_mlops/artifacts/<experiment>/
    stored = list((project / ".nb_mlops" / "artifacts").rglob("note.txt"))
    assert len(stored) == 1
    assert "churn_model" in str(stored[0])
    assert not (project / "mlruns").exists()


def test_existing_store_is_reused_with_its_runs(project: Path) -> None:
    cfg = store.ensure_store(load_config())
    client = store.client(cfg)
    run = client.create_run(store.experiment_id(cfg, "e"))
    client.set_terminated(run.info.run_id)
    # When the store is opened again by a new process's code path (forget the in-memory marker)
    store._ready.discard(cfg.store_dir)
    store.ensure_store(load_config())
    # Then the earlier run is still there
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_foreign_database_file_is_never_overwritten(project: Path) -> None:
    # Given a non-MLflow SQLite file where the store's database belongs
    db = project / ".nb_mlops" / "mlflow.db"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE precious (x)")
    con.execute("INSERT INTO precious VALUES (42)")
    con.commit()
    con.close()
    # When the store is opened, then a clear error names the file and nothing is replaced
    with pytest.raises(
        StoreError, match=r"mlflow\.db is not an MLflow database \(its tables: precious\)"
    ):
        store.ensure_store(load_config())
    assert sqlite3.connect(db).execute("SELECT x FROM precious").fetchone() == (42,)


def test_unwritable_root_gives_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "nb_mlops.toml").write_text("")
    (tmp_path / ".nb_mlops").write_text("a file where the store folder should be")
    with pytest.raises(StoreError, match="cannot create the store folder"):
        store.ensure_store(load_config(tmp_path))
