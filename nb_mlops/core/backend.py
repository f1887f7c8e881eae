"""The store seam: one `TrackingBackend` per tracking URI, chosen once from its scheme.

Two implementations answer the same calls. `SqliteTrackingBackend` reads and writes MLflow's tables
of the embedded store directly with `sqlite3` (no `import mlflow`, milliseconds per run); it is used
only when the store's schema revision is the one those statements were written against
(`SqliteBackend.compatible`), so a store MLflow migrated elsewhere falls back to MLflow's client.
`MlflowTrackingBackend` calls `MlflowClient`: a tracking server, or an unknown schema. Like MLflow's
own store registry, the choice is keyed by the URI's scheme (`open_backend`).
"""

from __future__ import annotations

import math
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from nb_mlops.core.config import Config
from nb_mlops.core.owners import (
    END_STATUS_TAG,
    OWNER_TAG,
    PENDING_TAG,
    orphan_outcome,
    owner_alive,
    owner_pid,
)
from nb_mlops.core.writer import Backend, ClientBackend, Metric, Pair, SqliteBackend

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nb_mlops.core.runs import OrderBy

__all__ = [
    "MlflowTrackingBackend",
    "RunRecord",
    "SqliteTrackingBackend",
    "TrackingBackend",
    "open_backend",
]


@dataclass(frozen=True)
class RunRecord:
    """A run as stored: its attributes and values (latest metric values; NaN kept as NaN)."""

    run_id: str
    experiment_id: str
    name: str
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class TrackingBackend(Backend, Protocol):
    """What tracking, the writer and the runs view ask of a store."""

    direct: bool  # True: plain SQL on the embedded store, MLflow is never imported for it

    def experiment(self, name: str) -> tuple[str, str]:
        """(experiment_id, artifact_location) of active experiment `name`, created if missing
        (the location may be "" when only MLflow knows it)."""
        ...

    def find_experiment(self, name: str) -> str | None:
        """The id of experiment `name`, or None (never creates one)."""
        ...

    def create_run(
        self,
        experiment_id: str,
        artifact_location: str,
        name: str,
        start_ms: int,
        tags: dict[str, str],
    ) -> tuple[str, str]:
        """A new RUNNING run; returns (run_id, artifact_uri)."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with its values, or None when it is not stored."""
        ...

    def runs_page(
        self, experiment_id: str, limit: int, offset: int, order: OrderBy | None = None
    ) -> tuple[list[RunRecord], bool]:
        """Active runs of an experiment in `order` (default: newest first), as MLflow's
        `search_runs` sorts them: `limit` of them from `offset`, and whether more follow."""
        ...

    def experiment_names(self) -> list[str]:
        """Names of the store's experiments (at most 100 from a server), for error messages."""
        ...

    def model_version_run(self, name: str, version: str) -> str | None:
        """The run a registered model version was logged from (None: no such version)."""
        ...

    def kill_orphans(self, busy: Collection[int] = ()) -> list[str]:
        """Settle the runs of this machine's processes that died before they were done
        (`nb_mlops.core.owners.orphan_outcome`), except those of the pids in `busy` (their
        journals are still being replayed); returns the run ids settled."""
        ...


def _nothing() -> None:
    return None


class MlflowTrackingBackend:
    """Everything through MlflowClient: a tracking server, or a schema we do not know."""

    direct = False

    def __init__(self, cfg: Config, before_mlflow: Callable[[], None] = _nothing) -> None:
        self.cfg = cfg
        self.before_mlflow = before_mlflow
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """Created on first use: choosing this backend never imports mlflow."""
        if self._client is None:
            from nb_mlops.core.store import client

            self.before_mlflow()
            self._client = client(self.cfg)
        return self._client

    def write(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None:
        ClientBackend(self.client).write(metrics, params, tags)

    def end(self, run_id: str, status: str, end_ms: int) -> None:
        ClientBackend(self.client).end(run_id, status, end_ms)

    def finish(
        self,
        run_id: str,
        values: tuple[list[Metric], list[Pair], list[Pair]],
        status: str | None,
        end_ms: int,
        drop_tags: tuple[str, ...] = (),
    ) -> None:
        ClientBackend(self.client).finish(run_id, values, status, end_ms, drop_tags)

    def experiment(self, name: str) -> tuple[str, str]:
        from nb_mlops.core.store import experiment_id

        self.before_mlflow()
        return experiment_id(self.cfg, name), ""

    def find_experiment(self, name: str) -> str | None:
        found = self.client.get_experiment_by_name(name)
        return None if found is None else str(found.experiment_id)

    def create_run(
        self,
        experiment_id: str,
        artifact_location: str,
        name: str,
        start_ms: int,
        tags: dict[str, str],
    ) -> tuple[str, str]:
        created = self.client.create_run(
            experiment_id, start_time=start_ms, tags=tags, run_name=name
        )
        return str(created.info.run_id), str(created.info.artifact_uri)

    def get_run(self, run_id: str) -> RunRecord | None:
        try:
            run = self.client.get_run(run_id)
        except Exception:  # MLflow raises its own RESOURCE_DOES_NOT_EXIST error for an unknown id
            return None
        return record_of(run)

    def runs_page(
        self, experiment_id: str, limit: int, offset: int, order: OrderBy | None = None
    ) -> tuple[list[RunRecord], bool]:
        from nb_mlops.core.runs import _page_token

        found = self.client.search_runs(
            [experiment_id],
            max_results=limit,
            order_by=[order.mlflow_clause()] if order else None,
            page_token=_page_token(offset) if offset else None,
        )
        return [record_of(run) for run in found], bool(found.token)

    def experiment_names(self) -> list[str]:
        return [e.name for e in self.client.search_experiments(max_results=100)]

    def model_version_run(self, name: str, version: str) -> str | None:
        try:
            found = self.client.get_model_version(name, version)
        except Exception:  # RESOURCE_DOES_NOT_EXIST
            return None
        return found.run_id or None

    def kill_orphans(self, busy: Collection[int] = ()) -> list[str]:
        """As the embedded store does, through the client: runs owned by a process of this
        machine that is gone (another machine's are left alone: we cannot tell)."""
        settled = []
        now = int(time.time() * 1000)
        for run in self._owned_here():
            tags = run.data.tags
            owner = tags.get(OWNER_TAG, "")
            if owner_alive(owner) or owner_pid(owner) in busy:
                continue
            current = run.info.status
            final, end_ms, new_tags = orphan_outcome(
                current, tags.get(PENDING_TAG), tags.get(END_STATUS_TAG), now
            )
            run_id = run.info.run_id
            if final != current:
                self.client.set_terminated(run_id, status=final, end_time=end_ms)
            for key, value in new_tags.items():
                self.client.set_tag(run_id, key, value)
            for key in (PENDING_TAG, END_STATUS_TAG):
                if key in tags:
                    self.client.delete_tag(run_id, key)
            settled.append(run_id)
        return settled

    def _owned_here(self) -> list[Any]:
        """Runs of active experiments owned by this machine that are RUNNING or still wait for
        a result (two searches: MLflow's filter has no OR)."""
        client = self.client  # imports mlflow whole first, under the import lock
        from mlflow.entities import ViewType

        host = socket.gethostname().replace("'", "")
        mine = f"tags.`{OWNER_TAG}` LIKE '{host}:%'"
        ids = [e.experiment_id for e in _pages(client.search_experiments, ViewType.ACTIVE_ONLY)]
        found: dict[str, Any] = {}
        for extra in ("attributes.status = 'RUNNING'", f"tags.`{PENDING_TAG}` LIKE '%'"):
            for start in range(0, len(ids), 100):  # a server takes at most 100 experiments
                batch = ids[start : start + 100]
                for run in _pages(client.search_runs, batch, filter_string=f"{mine} AND {extra}"):
                    found[run.info.run_id] = run
        return list(found.values())


def _pages(search: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Every item of an MLflow paged search, page after page."""
    token = None
    while True:
        page = search(*args, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def record_of(run: Any) -> RunRecord:
    """A RunRecord of an `mlflow.entities.Run`."""
    return RunRecord(
        run_id=run.info.run_id,
        experiment_id=str(run.info.experiment_id),
        name=run.info.run_name or "",
        status=run.info.status,
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        artifact_uri=run.info.artifact_uri or "",
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags=dict(run.data.tags),
    )


class SqliteTrackingBackend:
    """The embedded store's fast path: MLflow's tables, written and read with `sqlite3`."""

    direct = True

    def __init__(self, cfg: Config, before_mlflow: Callable[[], None] = _nothing) -> None:
        self.cfg = cfg
        self.sql = SqliteBackend(cfg.db_path)
        self.before_mlflow = before_mlflow

    def write(self, metrics: list[Metric], params: list[Pair], tags: list[Pair]) -> None:
        self.sql.write(metrics, params, tags)

    def end(self, run_id: str, status: str, end_ms: int) -> None:
        self.sql.end(run_id, status, end_ms)

    def finish(
        self,
        run_id: str,
        values: tuple[list[Metric], list[Pair], list[Pair]],
        status: str | None,
        end_ms: int,
        drop_tags: tuple[str, ...] = (),
    ) -> None:
        self.sql.finish(run_id, values, status, end_ms, drop_tags)

    def kill_orphans(self, busy: Collection[int] = ()) -> list[str]:
        """Settle the runs of processes that died before they were done (see SqliteBackend);
        no journal is replayed on the embedded store, so `busy` is moot."""
        return self.sql.kill_orphans()

    def experiment(self, name: str) -> tuple[str, str]:
        from nb_mlops.core.store import embedded_experiment, experiment_id

        # plain SQL, as MLflow would write it: the first run never waits for `import mlflow`
        hit = embedded_experiment(self.cfg, name)
        if hit is None:  # a name only MLflow may decide on (deleted experiment, over a limit)
            self.before_mlflow()
            exp_id = experiment_id(self.cfg, name)
            hit = self.sql.experiment(name) or (exp_id, "")
        return hit

    def find_experiment(self, name: str) -> str | None:
        with read_only(self.cfg) as con:
            row = con.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? "
                "ORDER BY workspace = 'default' DESC LIMIT 1",
                (name,),
            ).fetchone()
        return None if row is None else str(row[0])

    def create_run(
        self,
        experiment_id: str,
        artifact_location: str,
        name: str,
        start_ms: int,
        tags: dict[str, str],
    ) -> tuple[str, str]:
        run_id = uuid.uuid4().hex
        self.sql.create_run(run_id, experiment_id, artifact_location, name, start_ms, tags)
        return run_id, f"{artifact_location.rstrip('/')}/{run_id}/artifacts"

    def get_run(self, run_id: str) -> RunRecord | None:
        with read_only(self.cfg) as con:
            found = con.execute(f"{_RUN_COLUMNS} WHERE run_uuid = ?", (run_id,)).fetchall()
            records = read_records(con, found)
        return records[0] if records else None

    def runs_page(
        self, experiment_id: str, limit: int, offset: int, order: OrderBy | None = None
    ) -> tuple[list[RunRecord], bool]:
        from nb_mlops.core.runs import _order_sql

        join, order_sql, join_args = _order_sql(order)
        with read_only(self.cfg) as con:
            found = con.execute(
                "SELECT r.run_uuid, r.name, r.status, r.start_time, r.end_time, r.experiment_id, "
                f"r.artifact_uri FROM runs AS r {join} "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' "
                f"ORDER BY {order_sql} LIMIT ? OFFSET ?",
                [*join_args, int(experiment_id), limit + 1, offset],
            ).fetchall()
            records = read_records(con, found[:limit])
        return records, len(found) > limit

    def experiment_names(self) -> list[str]:
        with read_only(self.cfg) as con:
            return [str(row[0]) for row in con.execute("SELECT name FROM experiments")]

    def model_version_run(self, name: str, version: str) -> str | None:
        with read_only(self.cfg) as con:
            row = con.execute(
                "SELECT run_id FROM model_versions WHERE name = ? AND version = ?",
                (name, int(version)),
            ).fetchone()
        return None if row is None or not row[0] else str(row[0])


_RUN_COLUMNS = (
    "SELECT run_uuid, name, status, start_time, end_time, experiment_id, artifact_uri FROM runs"
)


class read_only:  # noqa: N801 - used as a function: `with read_only(cfg) as con`
    """A read-only connection to the embedded store: reads never lock out its writers."""

    def __init__(self, cfg: Config, timeout: float = 10.0) -> None:
        self.con = sqlite3.connect(
            f"file:{quote(str(cfg.db_path))}?mode=ro", uri=True, timeout=timeout
        )
        self.con.execute("PRAGMA query_only = 1")

    def __enter__(self) -> sqlite3.Connection:
        return self.con

    def __exit__(self, *exc: object) -> None:
        self.con.close()


def read_records(con: sqlite3.Connection, found: Sequence[Sequence[Any]]) -> list[RunRecord]:
    """RunRecords for (run_uuid, name, status, start_time, end_time, experiment_id[, artifact_uri])
    rows, with their params, tags and latest metrics (read in chunks of the ids)."""
    ids = [str(row[0]) for row in found]
    params = _by_run(con, "SELECT run_uuid, key, value FROM params", ids)
    tags = _by_run(con, "SELECT run_uuid, key, value FROM tags", ids)
    metrics = _by_run(
        con,
        "SELECT run_uuid, key, CASE WHEN is_nan = 1 THEN NULL ELSE value END FROM latest_metrics",
        ids,
    )
    return [
        RunRecord(
            run_id=str(row[0]),
            experiment_id=str(row[5]),
            name=row[1] or "",
            status=row[2] or "",
            start_time=row[3],
            end_time=row[4],
            artifact_uri=(row[6] or "") if len(row) > 6 else "",
            params=params.get(str(row[0]), {}),
            metrics={
                k: (math.nan if v is None else float(v))
                for k, v in metrics.get(str(row[0]), {}).items()
            },
            tags={k: ("" if v is None else v) for k, v in tags.get(str(row[0]), {}).items()},
        )
        for row in found
    ]


def _by_run(con: sqlite3.Connection, select: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    # SQLite allows 32,766 bound variables; pages larger than a chunk are read in chunks.
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        marks = ",".join("?" * len(chunk))
        for run_id, key, value in con.execute(f"{select} WHERE run_uuid IN ({marks})", chunk):
            out.setdefault(run_id, {})[key] = value
    return out


def _embedded(cfg: Config, before_mlflow: Callable[[], None]) -> TrackingBackend:
    if cfg.is_embedded and SqliteBackend.compatible(cfg.db_path):  # the one schema check
        return SqliteTrackingBackend(cfg, before_mlflow)
    return MlflowTrackingBackend(cfg, before_mlflow)


def _client(cfg: Config, before_mlflow: Callable[[], None]) -> TrackingBackend:
    return MlflowTrackingBackend(cfg, before_mlflow)


# keyed by the tracking URI's scheme, as MLflow's own store registry is; anything else: the client
_SCHEMES: dict[str, Callable[[Config, Callable[[], None]], TrackingBackend]] = {
    "sqlite": _embedded,
    "http": _client,
    "https": _client,
}


def open_backend(cfg: Config, before_mlflow: Callable[[], None] = _nothing) -> TrackingBackend:
    """The backend for `cfg`'s tracking URI. `before_mlflow` runs before any MLflow call (tracking
    waits there for a warm-up thread that may be importing mlflow)."""
    scheme = urlsplit(cfg.tracking_uri).scheme
    return _SCHEMES.get(scheme, _client)(cfg, before_mlflow)
