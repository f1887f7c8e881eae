"""Paged, sorted views of an experiment's runs: one page at a time, never every run.

On the embedded SQLite store a page is read with one read-only SQL query that reproduces the order of
MLflow's `search_runs` exactly (a test holds the two equal), without importing mlflow. On any other
store `MlflowClient.search_runs(max_results=..., order_by=[...])` does the work. Both give a `RunsPage`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from nb_mlops.core.backend import (
    MlflowTrackingBackend,
    RunRecord,
    TrackingBackend,
    open_backend,
)
from nb_mlops.core.config import Config, load_config
from nb_mlops.core.durable import settle
from nb_mlops.core.errors import ConfigError, TrackingError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_UI_URL",
    "ExperimentNotFound",
    "MAX_LIMIT",
    "OrderBy",
    "RunRow",
    "RunsPage",
    "experiment_url",
    "model_url",
    "parse_order_by",
    "resolve_experiment",
    "run_row",
    "run_url",
    "runs",
    "ui_url",
]

DEFAULT_UI_URL = "http://127.0.0.1:5000"
MAX_LIMIT = 50_000  # MLflow's own cap on search_runs(max_results=...)
DEFAULT_EXPERIMENT = "Default"

# MLflow's orderable run attributes we expose, with their column in the `runs` table.
_ATTRIBUTE_COLUMNS = {
    "start_time": "start_time",
    "end_time": "end_time",
    "status": "status",
    "run_name": "name",
}
_ATTRIBUTE_ALIASES = {"created": "start_time", "name": "run_name", "run name": "run_name"}
_ENTITY_TABLES = {"metrics": "latest_metrics", "params": "params", "tags": "tags"}
_ENTITY_ALIASES = {"metric": "metrics", "param": "params", "parameter": "params", "tag": "tags"}


class ExperimentNotFound(TrackingError):
    """An experiment asked for by name does not exist in the store."""


@dataclass(frozen=True)
class OrderBy:
    """What a page is sorted by: `kind` is metrics | params | tags | attributes."""

    kind: str
    key: str
    ascending: bool = False

    def mlflow_clause(self) -> str:
        """The same order in MLflow's `order_by` syntax, e.g. "metrics.`acc` DESC"."""
        if "`" in self.key:
            raise TrackingError(
                f"cannot sort by {self.key!r}: a backtick in the key is not supported"
            )
        prefix = "attributes" if self.kind == "attributes" else self.kind
        return f"{prefix}.`{self.key}` {'ASC' if self.ascending else 'DESC'}"

    def label(self) -> str:
        return self.key if self.kind in ("metrics", "attributes") else f"{self.kind}.{self.key}"


def parse_order_by(spec: str | None, ascending: bool = False) -> OrderBy | None:
    """Read a sort key: `metrics.acc`, `params.lr`, `tags.x`, `start_time`, `status`, `run_name`,
    or a bare name, which means a metric. None (or "") keeps MLflow's default: newest first.

    Raises:
        TrackingError: the key names an unknown kind or attribute.
    """
    if not spec:
        return None
    spec = spec.strip()
    head, dot, rest = spec.partition(".")
    head_l = head.lower()
    if dot and (head_l in _ENTITY_TABLES or head_l in _ENTITY_ALIASES) and rest:
        return OrderBy(_ENTITY_ALIASES.get(head_l, head_l), _key(rest), ascending)
    if dot and head_l in ("attribute", "attributes"):
        name = _ATTRIBUTE_ALIASES.get(rest.lower(), rest.lower())
        if name not in _ATTRIBUTE_COLUMNS:
            known = ", ".join(sorted(_ATTRIBUTE_COLUMNS))
            raise TrackingError(f"cannot sort by attribute {rest!r}; use one of: {known}")
        return OrderBy("attributes", name, ascending)
    name = _ATTRIBUTE_ALIASES.get(spec.lower(), spec.lower())
    if name in _ATTRIBUTE_COLUMNS:
        return OrderBy("attributes", name, ascending)
    return OrderBy("metrics", _key(spec), ascending)


def _key(text: str) -> str:
    key = text.strip("`")
    if "`" in key or not key:
        raise TrackingError(f"cannot sort by {text!r}: give a key without backticks")
    return key


@dataclass(frozen=True)
class RunRow:
    """One run as the runs view shows it (times in ms since the epoch, as MLflow keeps them)."""

    run_id: str
    experiment_id: str
    name: str
    status: str
    start_time: int | None
    end_time: int | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    url: str

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None while the run has not ended."""
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (NaN and infinities become None, which JSON cannot carry)."""
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "name": self.name,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_s": self.duration_s,
            "params": dict(self.params),
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()},
            "tags": dict(self.tags),
            "url": self.url,
        }


@dataclass(frozen=True)
class RunsPage:
    """One page of an experiment's runs, in the requested order.

    Attributes:
        experiment: the experiment's name; `experiment_id` is None when it does not exist yet.
        order: the sort (None: newest first, MLflow's default).
        rows: the runs of this page.
        offset: how many runs come before this page.
        next_page_token: pass it as `page_token` for the next page; None on the last page.
        source: "sql" (direct read of the embedded store) or "mlflow" (MlflowClient.search_runs).
    """

    experiment: str
    experiment_id: str | None
    order: OrderBy | None
    limit: int
    rows: list[RunRow] = field(default_factory=list)
    offset: int = 0
    next_page_token: str | None = None
    page_token: str | None = None
    source: str = "sql"

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[RunRow]:
        return iter(self.rows)

    @property
    def metric(self) -> str | None:
        """The metric the page is sorted by, if it is sorted by one."""
        return self.order.key if self.order is not None and self.order.kind == "metrics" else None

    @property
    def metric_keys(self) -> list[str]:
        return _union(row.metrics for row in self.rows)

    @property
    def param_keys(self) -> list[str]:
        return _union(row.params for row in self.rows)

    @property
    def sort_key_missing(self) -> bool:
        """True when the page is sorted by a metric/param/tag that no run of the experiment has.

        Runs lacking the key sort last, so if the first run of the first page lacks it, all do.
        """
        if self.order is None or self.order.kind == "attributes" or self.offset or not self.rows:
            return False
        first = self.rows[0]
        found: dict[str, Any] = getattr(first, self.order.kind)
        return self.order.key not in found

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of `nb-mlops runs --json`."""
        return {
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "order_by": self.order.mlflow_clause() if self.order else None,
            "offset": self.offset,
            "limit": self.limit,
            "next_page_token": self.next_page_token,
            "runs": [row.to_dict() for row in self.rows],
        }

    def to_frame(self) -> pd.DataFrame:
        """The page as a DataFrame: one row per run, `params.*` and `metrics.*` columns."""
        import pandas as pd

        records = []
        for row in self.rows:
            record: dict[str, Any] = {
                "run_id": row.run_id,
                "name": row.name,
                "status": row.status,
                "start_time": pd.to_datetime(row.start_time, unit="ms", utc=True),
                "duration_s": row.duration_s,
            }
            record.update({f"params.{k}": v for k, v in row.params.items()})
            record.update({f"metrics.{k}": v for k, v in row.metrics.items()})
            records.append(record)
        return pd.DataFrame.from_records(records)

    def __repr__(self) -> str:
        order = self.order.mlflow_clause() if self.order else "start_time DESC"
        return (
            f"<RunsPage {self.experiment!r}: {len(self.rows)} runs from #{self.offset + 1}, "
            f"by {order}{', more' if self.next_page_token else ''}>"
        )


def _union(dicts: Iterator[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for found in dicts:
        seen.update(dict.fromkeys(found))
    return sorted(seen)


# --- public entry point ------------------------------------------------------------------------


def runs(
    experiment: str | None = None,
    metric: str | None = None,
    limit: int = 50,
    page_token: str | None = None,
    ascending: bool = False,
    *,
    order_by: str | None = None,
    missing_ok: bool = False,
    cfg: Config | None = None,
) -> RunsPage:
    """One page of an experiment's runs, sorted by a metric (or newest first).

    Only the requested page is read from the store, however many runs the experiment holds.

    Args:
        experiment: experiment name; default: `experiment` from the config, else the
            experiment of the latest run (`%mlops runs` passes the notebook's experiment).
        metric: sort by this metric (runs without it come last, NaN just before them).
        limit: runs per page (1 to 50,000).
        page_token: `next_page_token` of the previous page.
        ascending: smallest first (default: largest first).
        order_by: instead of `metric`: `metrics.K`, `params.K`, `tags.K`, `start_time`,
            `end_time`, `status` or `run_name`.
        missing_ok: an `experiment` that does not exist yet is an empty page, not an error.
        cfg: the project configuration (default: found from the working folder).

    Returns:
        A RunsPage; iterate it for RunRow objects, `.next_page_token` for the next page.

    Raises:
        ExperimentNotFound: `experiment` was given and does not exist.
        TrackingError: bad limit, page token or sort key.

    Example:
        >>> page = nb_mlops.runs(metric="accuracy", limit=10)      # doctest: +SKIP
        >>> [(r.name, r.metrics["accuracy"]) for r in page]        # doctest: +SKIP
    """
    cfg = cfg or load_config()
    settle()  # this process's own pending writes first: one kernel reads what it just wrote
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise TrackingError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    if metric and order_by:
        raise TrackingError("give either metric or order_by, not both")
    order = parse_order_by(order_by or metric, ascending)
    offset = _parse_page_token(page_token)
    name, explicit = resolve_experiment(cfg, experiment)
    explicit = explicit and not missing_ok
    if cfg.is_embedded and not cfg.db_path.exists():
        # No store yet, so no runs: say so without creating one as a side effect of looking.
        if explicit:
            _raise_not_found(name, [])
        return RunsPage(name, None, order, limit, offset=offset, page_token=page_token)
    page = _Page(cfg, name, explicit, order, limit, offset, page_token)
    try:
        return page.read(open_backend(cfg))
    except sqlite3.Error:  # locked beyond the timeout, or a schema we do not know
        return page.read(MlflowTrackingBackend(cfg))


def run_row(run_id: str, cfg: Config | None = None) -> RunRow | None:
    """One run as a RunRow (e.g. the session's last run for `%mlops`), None if it is not stored."""
    cfg = cfg or load_config()
    settle()
    if cfg.is_embedded and not cfg.db_path.exists():
        return None  # no store yet: nothing to find, and no reason to create one here
    backend = open_backend(cfg)
    try:
        record = backend.get_run(run_id)
    except sqlite3.Error:  # locked beyond the timeout, or a schema we do not know
        record = MlflowTrackingBackend(cfg).get_run(run_id)
    return None if record is None else _row_of(record, ui_url(cfg))


def resolve_experiment(cfg: Config, experiment: str | None) -> tuple[str, bool]:
    """The experiment to show and whether the caller named it (True) or it was inferred."""
    if experiment:
        return experiment, True
    if cfg.experiment:
        return cfg.experiment, False
    return _latest_experiment(cfg) or DEFAULT_EXPERIMENT, False


def ui_url(cfg: Config) -> str:
    """The MLflow UI's base URL: config key `ui_url` (http or https); by default the team
    server's own URL when tracking goes to one (it serves the UI), else DEFAULT_UI_URL."""
    value = cfg.settings.get("ui_url")
    if value is None:
        server = urlsplit(cfg.tracking_uri)
        served = server.scheme in ("http", "https")
        # never the credentials a tracking URI may carry (user:token@host) into printed links
        host = server.netloc.rpartition("@")[2]
        value = f"{server.scheme}://{host}{server.path}" if served else DEFAULT_UI_URL
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ConfigError(f"ui_url must be an http(s) URL, got {value!r}; fix [tool.nb_mlops]")
    return value.rstrip("/")


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """The link to one run in the MLflow UI."""
    return f"{base}/#/experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}"


def experiment_url(base: str, experiment_id: str) -> str:
    """The link to an experiment's runs list in the MLflow UI (its bare page opens MLflow 3's
    overview tab, not the runs)."""
    return f"{base}/#/experiments/{quote(experiment_id, safe='')}/runs"


def model_url(base: str, name: str, version: str | None = None) -> str:
    """The link to a registered model (or one of its versions) in the MLflow UI."""
    page = f"{base}/#/models/{quote(name, safe='')}"
    return f"{page}/versions/{quote(str(version), safe='')}" if version is not None else page


# --- page tokens: the same shape as MLflow's, so either path reads the other's -------------------


def _parse_page_token(token: str | bytes | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.b64decode(token, validate=True))["offset"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise TrackingError(f"invalid page token {token!r}; pass a page's next_page_token") from exc
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise TrackingError(f"invalid page token {token!r}; pass a page's next_page_token")
    return offset


def _page_token(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


# --- the direct path: the embedded SQLite store ------------------------------------------------


def _sql_readable(cfg: Config) -> bool:
    return (
        cfg.is_embedded and cfg.db_path.is_file() and cfg.db_path.with_name(".schema-ok").exists()
    )


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only: this path never writes, so it can never corrupt or lock the store for writers.
    con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10.0)
    con.execute("PRAGMA query_only = 1")
    return con


def _order_sql(order: OrderBy | None) -> tuple[str, str, list[Any]]:
    """(join, ORDER BY, join parameters) reproducing `_get_orderby_clauses` of MLflow's SQL store.

    MLflow sorts by a presence flag first (a metric: 0 value, 1 NaN, 2 missing), then the value in
    the asked direction, then start_time DESC (unless that is the sort), then run_uuid.
    """
    direction = "ASC" if order is not None and order.ascending else "DESC"
    if order is None:
        return "", "r.start_time DESC, r.run_uuid", []
    if order.kind == "attributes":
        column = f"r.{_ATTRIBUTE_COLUMNS[order.key]}"
        tail = "" if order.key == "start_time" else ", r.start_time DESC"
        clause = f"CASE WHEN {column} IS NULL THEN 1 ELSE 0 END, {column} {direction}{tail}"
        return "", f"{clause}, r.run_uuid", []
    table = _ENTITY_TABLES[order.kind]
    join = f"LEFT OUTER JOIN {table} AS s ON s.run_uuid = r.run_uuid AND s.key = ?"
    if order.kind == "metrics":
        flag = "CASE WHEN s.is_nan = 1 THEN 1 WHEN s.value IS NULL THEN 2 ELSE 0 END"
    else:
        flag = "CASE WHEN s.value IS NULL THEN 1 ELSE 0 END"
    return join, f"{flag}, s.value {direction}, r.start_time DESC, r.run_uuid", [order.key]


@dataclass(frozen=True)
class _Page:
    """What `runs()` asks for, read through either backend."""

    cfg: Config
    name: str
    explicit: bool
    order: OrderBy | None
    limit: int
    offset: int
    page_token: str | None

    def read(self, backend: TrackingBackend) -> RunsPage:
        source = "sql" if backend.direct else "mlflow"
        exp_id = backend.find_experiment(self.name)
        if exp_id is None:
            if self.explicit:
                _raise_not_found(self.name, backend.experiment_names())
            return RunsPage(
                self.name,
                None,
                self.order,
                self.limit,
                offset=self.offset,
                page_token=self.page_token,
                source=source,
            )
        records, more = backend.runs_page(exp_id, self.limit, self.offset, self.order)
        base = ui_url(self.cfg)
        return RunsPage(
            experiment=self.name,
            experiment_id=exp_id,
            order=self.order,
            limit=self.limit,
            rows=[_row_of(record, base) for record in records],
            offset=self.offset,
            next_page_token=_page_token(self.offset + self.limit) if more else None,
            page_token=self.page_token,
            source=source,
        )


def _row_of(record: RunRecord, base: str) -> RunRow:
    return RunRow(
        run_id=record.run_id,
        experiment_id=record.experiment_id,
        name=record.name,
        status=record.status,
        start_time=record.start_time,
        end_time=record.end_time,
        params=record.params,
        metrics=record.metrics,
        tags=record.tags,
        url=run_url(base, record.experiment_id, record.run_id),
    )


def _latest_experiment(cfg: Config) -> str | None:
    """The experiment holding the most recently started active run, if any."""
    if _sql_readable(cfg):
        try:
            con = _connect(cfg.db_path)
            try:
                row = con.execute(
                    "SELECT e.name FROM runs AS r JOIN experiments AS e "
                    "ON e.experiment_id = r.experiment_id WHERE r.lifecycle_stage = 'active' "
                    "ORDER BY r.start_time DESC LIMIT 1"
                ).fetchone()
            finally:
                con.close()
            return None if row is None else str(row[0])
        except sqlite3.Error:
            pass
    if cfg.is_embedded and not cfg.db_path.exists():
        return None  # no store yet: nothing to find, and no reason to create one here
    from nb_mlops.core.store import client

    found = client(cfg).search_experiments(max_results=1, order_by=["last_update_time DESC"])
    return str(found[0].name) if found else None


def _raise_not_found(name: str, known: Sequence[str]) -> None:
    listed = ", ".join(sorted(known)[:20]) or "none yet"
    raise ExperimentNotFound(f"experiment {name!r} not found; known experiments: {listed}")


def _page_mlflow(
    cfg: Config,
    name: str,
    explicit: bool,
    order: OrderBy | None,
    limit: int,
    offset: int,
    page_token: str | None,
) -> RunsPage:
    """The page read through MlflowClient whatever the store (held equal to the direct read)."""
    page = _Page(cfg, name, explicit, order, limit, offset, page_token)
    return page.read(MlflowTrackingBackend(cfg))
