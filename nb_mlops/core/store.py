"""The embedded store: `.nb_mlops/` folders, the MLflow SQLite schema, and the client to reach it.

MLflow's schema migrations are not safe when several processes create a new SQLite file at once, and
take seconds. So the schema is created once, under our own cross-process lock, from a per-user
template copied in milliseconds (made by MLflow's own migrations the first time on a machine). The
database runs in WAL mode; every connection uses `synchronous=NORMAL` and a long busy timeout.
An existing database is checked first (`check_database`, milliseconds): an empty, foreign, damaged,
truncated or read-only file is refused in one line instead of MLflow's minutes of retries, and only
`init_store(force=True)` (`nb-mlops store init --force`) moves an unusable one aside.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import StoreError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "artifact_location_for",
    "check_database",
    "client",
    "embedded_experiment",
    "ensure_store",
    "experiment_id",
    "init_store",
    "install_sqlite_pragmas",
    "lock",
    "STORE_SUBDIRS",
]

STORE_SUBDIRS = ("artifacts", "data/objects", "data/refs", "runs", "locks")
BUSY_TIMEOUT_MS = 60_000

_ready: set[Path] = set()
_ready_lock = threading.Lock()
_clients: dict[tuple[str, str], MlflowClient] = {}
_pragmas_installed = False


def lock(cfg: Config, name: str, timeout: float = -1) -> FileLock:
    """A cross-process lock file `.nb_mlops/locks/<name>.lock` (a dead holder's lock is released
    by the OS, so it never goes stale)."""
    cfg.locks_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(cfg.locks_dir / f"{name}.lock"), timeout=timeout)


def ensure_store(cfg: Config | None = None) -> Config:
    """Create the store folders and, for the embedded store, the MLflow schema. Idempotent.

    Safe to call from many processes at once. Costs a set lookup once done.
    """
    cfg = cfg or load_config()
    if cfg.store_dir in _ready:
        return cfg
    with _ready_lock:
        if cfg.store_dir in _ready:
            return cfg
        try:
            for sub in STORE_SUBDIRS:
                (cfg.store_dir / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store folder {cfg.store_dir}: {exc.strerror}; "
                "check the permissions of the project root"
            ) from exc
        if "sqlalchemy" in sys.modules:  # an engine may be opened by anyone from now on
            install_sqlite_pragmas()
        problem = check_database(cfg.db_path) if cfg.is_embedded else None
        if problem is not None:
            raise StoreError(problem)
        if cfg.is_embedded and not _schema_ready(cfg.db_path):
            with lock(cfg, "schema"):
                if not _schema_ready(cfg.db_path):
                    _create_schema(cfg)
        _ready.add(cfg.store_dir)
    return cfg


_MLFLOW_IMPORT = threading.Lock()


def import_mlflow() -> Any:
    """The whole mlflow package, imported by one thread at a time.

    MLflow's modules import one another in circles. Two threads importing two of its submodules
    at once (our writer's dataset input and the outbox sender's client, say) can each hold a
    module the other needs; Python then hands one of them a half-initialised module, and it
    fails with "partially initialized module 'mlflow'". Importing the package first, under one
    lock, before any `from mlflow.x import y` on a background thread, avoids that.
    """
    found = sys.modules.get("mlflow")
    spec = getattr(found, "__spec__", None)
    if found is not None and spec is not None and not getattr(spec, "_initializing", False):
        return found
    with _MLFLOW_IMPORT:
        import mlflow

        return mlflow


def client(cfg: Config | None = None) -> MlflowClient:
    """An MlflowClient on the configured store (created once per URI pair)."""
    cfg = ensure_store(cfg)
    key = (cfg.tracking_uri, cfg.registry_uri)
    found = _clients.get(key)
    if found is None:
        import_mlflow()
        from mlflow.tracking import MlflowClient

        install_sqlite_pragmas()
        # on a server store MLflow prints "View run … at" to stdout whenever a run ends, from the
        # thread that ends it (our writer's: into whichever cell runs); our summaries link runs
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        found = _clients[key] = MlflowClient(cfg.tracking_uri, cfg.registry_uri)
    return found


_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextmanager
def environment_kept() -> Iterator[None]:
    """Undo what MLflow writes into `os.environ`: its `set_tracking_uri` (and the context that
    restores it) exports the URI for subprocesses, which would then override the project's
    store for every later `load_config()` in this process, whichever project it opens."""
    before = {name: os.environ.get(name) for name in _URI_VARIABLES}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def point_mlflow_at(tracking_uri: str, registry_uri: str) -> None:
    """Point MLflow's fluent API (autolog) at a store without writing `os.environ`.

    MLflow's setters export the URIs, which `environment_kept` then takes back; but a change to
    `os.environ` while another thread iterates it (requests reading the proxy variables for an HTTP
    call to a tracking server, e.g. our writer's) raises KeyError in that thread. So the setters'
    module globals are set directly, and the setters are used only if MLflow renamed them.
    """
    import importlib

    import mlflow

    registry_utils: Any = importlib.import_module("mlflow.tracking._model_registry.utils")
    tracking_utils: Any = importlib.import_module("mlflow.tracking._tracking_service.utils")
    if hasattr(tracking_utils, "_tracking_uri") and hasattr(registry_utils, "_registry_uri"):
        if tracking_utils._tracking_uri != tracking_uri:
            tracking_utils._tracking_uri = tracking_uri
            tracking_utils.reset()  # the tracer provider keeps the URI it exports traces to
        registry_utils._registry_uri = registry_uri
        return
    with environment_kept():
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri)


def artifact_location_for(cfg: Config, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: `<artifact_root>/<experiment>` on the embedded
    store (MLflow would pick `./mlruns` under the cwd), the server's default otherwise."""
    if not cfg.is_embedded and "artifact_root" not in cfg.settings:
        return None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in experiment) or "default"
    root = cfg.artifact_root
    if "://" in root:
        return f"{root.rstrip('/')}/{safe}"
    return Path(root, safe).resolve().as_uri()


def experiment_id(cfg: Config, name: str) -> str:
    """The id of experiment `name`, created with the right artifact location if missing."""
    mlflow_client = client(cfg)
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    with lock(cfg, "experiments"):
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(
            mlflow_client.create_experiment(
                name, artifact_location=artifact_location_for(cfg, name)
            )
        )


# MLflow's limits on experiment names and artifact locations (mlflow.utils.validation)
_MAX_EXPERIMENT_NAME = 500
_MAX_ARTIFACT_LOCATION = 2048


def embedded_experiment(cfg: Config, name: str) -> tuple[str, str] | None:
    """(experiment_id, artifact_location) of active experiment `name` on the embedded store,
    created with plain SQL if missing, without importing MLflow (it costs seconds).

    Writes the row MLflow's `SqlAlchemyStore.create_experiment` writes (workspace `default`,
    lifecycle `active`, creation = last update time, the location `experiment_id` would pick),
    under the same `experiments` lock. Returns None whenever MLflow itself must decide: a server
    store, a deleted experiment holding the name, a name or location over MLflow's limits. The
    caller checks that the schema revision is one whose tables it knows.
    """
    if not cfg.is_embedded or not name or len(name) > _MAX_EXPERIMENT_NAME:
        return None
    cfg = ensure_store(cfg)
    con = sqlite3.connect(str(cfg.db_path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        found = _experiment_row(con, name)
        if found is not None:
            return found or None
        location = artifact_location_for(cfg, name)
        if location is None or len(location) > _MAX_ARTIFACT_LOCATION:
            return None
        with lock(cfg, "experiments"):
            con.execute("BEGIN IMMEDIATE")
            try:
                found = _experiment_row(con, name)
                if found is None:
                    now = int(time.time() * 1000)
                    cursor = con.execute(
                        "INSERT INTO experiments (name, artifact_location, lifecycle_stage, "
                        "creation_time, last_update_time, workspace) "
                        "VALUES (?, ?, 'active', ?, ?, 'default')",
                        (name, location, now, now),
                    )
                    found = (str(cursor.lastrowid), location)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        return found or None
    finally:
        con.close()


def _experiment_row(con: sqlite3.Connection, name: str) -> tuple[str, str] | Literal[False] | None:
    """The active experiment's (id, location); False when the name belongs to a deleted one."""
    row = con.execute(
        "SELECT experiment_id, artifact_location, lifecycle_stage FROM experiments "
        "WHERE name = ? AND workspace = 'default'",
        (name,),
    ).fetchone()
    if row is None:
        return None
    if row[2] != "active":
        return False
    return (str(row[0]), str(row[1]))


# --- checking an existing database ------------------------------------------------------------

_SQLITE_MAGIC = b"SQLite format 3\x00"
_INIT = "`nb-mlops store init --force` moves it aside and starts a new, empty tracking store"


def check_database(path: Path) -> str | None:
    """Why `path` cannot be the embedded MLflow database, in one line; None when it can (or is
    missing: then it is created).

    Reads the 100-byte header and one row, so it costs milliseconds on any size: a zero-length,
    foreign, damaged, truncated or read-only file is named with what to do, where MLflow would
    retry for minutes and end in a traceback.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror}); check the permissions of its folder"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file; move it away so the store can use the name"
    if info.st_size == 0:
        return f"{path} is empty (0 bytes), not an MLflow database; {_INIT}"
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror}); check its permissions"
    if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
        return f"{path} is not an SQLite database (damaged, or another kind of file); {_INIT}"
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    (pages,) = struct.unpack(">I", header[28:32])
    if header[24:28] == header[92:96] and info.st_size < pages * page_size:
        return (
            f"{path} is truncated ({info.st_size} of {pages * page_size} bytes): restore it from "
            f"a backup, or {_INIT}"
        )
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return (
            f"{path} is read-only (the file or its folder): every run is written to it; make "
            "both writable, or set NB_MLOPS_ROOT to a project folder you can write"
        )
    return _check_tables(path)


def _check_tables(path: Path) -> str | None:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return f"{path} cannot be opened ({exc}); {_INIT}"
    try:
        tables = {
            str(row[0])
            for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        revision = (
            con.execute("SELECT version_num FROM alembic_version").fetchone()
            if "alembic_version" in tables
            else None
        )
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None  # another process holds it: it is a database, and it is in use
        return f"{path} cannot be read ({exc}); {_INIT}"
    except sqlite3.DatabaseError as exc:
        return f"{path} is damaged ({exc}); restore it from a backup, or {_INIT}"
    finally:
        con.close()
    if not tables:
        return f"{path} is an empty SQLite file, not an MLflow database; {_INIT}"
    if revision is None:
        shown = ", ".join(sorted(tables)[:4]) + (", ..." if len(tables) > 4 else "")
        return (
            f"{path} is not an MLflow database (its tables: {shown}); it is never overwritten: "
            f"move it away, or {_INIT}"
        )
    if any(name.startswith("_alembic_tmp_") for name in tables):
        return (
            f"{path} is not a complete MLflow database (a half-finished migration); restore it "
            f"from a backup, or {_INIT}"
        )
    return None


def init_store(cfg: Config | None = None, force: bool = False) -> tuple[Config, Path | None]:
    """Create the embedded store; with `force`, first move an unusable database aside.

    A usable database is never touched. The moved file keeps its bytes
    (`mlflow.db.unusable-<UTC time>`, with its `-wal`/`-shm`), so nothing is deleted.

    Returns:
        (the configuration, where the unusable database was moved, or None).

    Raises:
        StoreError: the database is unusable and `force` is not set, or it is read-only (moving it
            aside would not help), or the store is not the embedded one.
    """
    cfg = cfg or load_config()
    if not cfg.is_embedded:
        raise StoreError(
            f"the tracking store is {cfg.tracking_uri}, not the embedded one: nothing to initialise"
        )
    moved: Path | None = None
    problem = check_database(cfg.db_path)
    if problem is not None:
        if not force:
            raise StoreError(problem)
        if "read-only" in problem:
            raise StoreError(problem)
        with lock(cfg, "schema"):
            if check_database(cfg.db_path) is not None:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                moved = cfg.db_path.with_name(f"{cfg.db_path.name}.unusable-{stamp}")
                for suffix in ("", "-wal", "-shm"):
                    old = Path(f"{cfg.db_path}{suffix}")
                    if old.exists():
                        os.replace(old, Path(f"{moved}{suffix}"))
                cfg.db_path.with_name(".schema-ok").unlink(missing_ok=True)
        with _ready_lock:
            _ready.discard(cfg.store_dir)
    return ensure_store(cfg), moved


# --- schema ----------------------------------------------------------------------------------


def _db_revision(path: Path) -> str | None:
    """The alembic revision of a complete MLflow database, or None (missing, half-migrated)."""
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        return None
    try:
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        tmp = con.execute(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'"
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    if row is None or (tmp and tmp[0]):
        return None
    return str(row[0])


def _has_tables(path: Path) -> bool:
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        row = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    except sqlite3.DatabaseError:
        return True  # not even SQLite: never overwrite it
    finally:
        con.close()
    return bool(row and row[0])


def _schema_ready(path: Path) -> bool:
    return path.exists() and path.with_name(".schema-ok").exists()


def _template_path() -> Path:
    """A migrated empty database per MLflow version, kept in the user's cache folder."""
    from importlib.metadata import version

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nb_mlops" / "schema" / f"mlflow-{version('mlflow')}.db"


def _build_template(target: Path) -> None:
    """Run MLflow's own migrations once into `target` (the slow path: seconds)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    install_sqlite_pragmas()
    store = SqlAlchemyStore(f"sqlite:///{tmp}", str(target.parent / "artifacts"))  # type: ignore[no-untyped-call]
    store.engine.dispose()
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    os.replace(tmp, target)


def _create_schema(cfg: Config) -> None:
    """Called under the schema lock: put a migrated database at `cfg.db_path`."""
    template = _template_path()
    template.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(template) + ".lock"):
        if _db_revision(template) is None:
            _build_template(template)
    head = _db_revision(template)
    db = cfg.db_path
    if db.exists() and _db_revision(db) == head:
        db.with_name(".schema-ok").write_text(str(head))
        return
    if db.exists() and _db_revision(db) is not None:
        # An older schema: let MLflow migrate it in place, still under our lock.
        from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine_with_retry

        install_sqlite_pragmas()
        engine = create_sqlalchemy_engine_with_retry(f"sqlite:///{db}")  # type: ignore[no-untyped-call]
        _upgrade_db(engine)  # type: ignore[no-untyped-call]
        engine.dispose()
        db.with_name(".schema-ok").write_text(str(head))
        return
    if db.exists() and _has_tables(db):
        raise StoreError(
            f"{db} is not a complete MLflow database (no schema revision, or a half-finished "
            "migration); move it aside and run again to start a new store"
        )
    staged = db.with_name(f"mlflow.db.{os.getpid()}.tmp")
    shutil.copyfile(template, staged)
    con = sqlite3.connect(staged)
    try:
        default_root = Path(cfg.artifact_root)
        location = (
            default_root.resolve().as_uri() if "://" not in cfg.artifact_root else cfg.artifact_root
        )
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (location.rstrip("/") + "/0",),
        )
        con.commit()
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()
    os.replace(staged, db)
    db.with_name(".schema-ok").write_text(str(head))


def install_sqlite_pragmas() -> None:
    """Every SQLite connection SQLAlchemy opens gets WAL-friendly pragmas.

    Called before anything of ours lets MLflow open an engine; not on every `ensure_store`, whose
    direct-SQL callers would otherwise import SQLAlchemy (≈ 0.25 s) for nothing.
    """
    global _pragmas_installed
    if _pragmas_installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    event.listen(Engine, "connect", on_connect)
    _pragmas_installed = True
