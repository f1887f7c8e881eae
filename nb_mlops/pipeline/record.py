"""How the runner writes its MLflow runs: straight into the embedded store's tables (the SQL of
`nb_mlops.core.writer.SqliteBackend`, no MLflow import: a cached re-run stays well under 0.3 s),
or through `MlflowClient` on a tracking server or a schema revision that SQL does not know.

Reads (a step's metrics, nested runs, the reproduction check) keep using `MlflowClient`.
"""

from __future__ import annotations

import shutil
import time
import urllib.parse
import urllib.request
import uuid
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from nb_mlops.core.config import Config
from nb_mlops.core.store import client as mlflow_client
from nb_mlops.core.store import embedded_experiment, ensure_store, experiment_id
from nb_mlops.core.user import current_user
from nb_mlops.core.writer import SqliteBackend, log_batch

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["Recorder"]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Recorder:
    """Create, fill and end the runs of one pipeline run."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = ensure_store(cfg)
        self.sqlite: SqliteBackend | None = None
        if cfg.is_embedded and SqliteBackend.compatible(cfg.db_path):
            self.sqlite = SqliteBackend(cfg.db_path)
        self._locations: dict[str, str] = {}

    @cached_property
    def client(self) -> MlflowClient:
        return mlflow_client(self.cfg)

    def experiment(self, name: str) -> str:
        """The id of experiment `name` (created, with its artifact location, if missing)."""
        if self.sqlite is not None:
            found = embedded_experiment(self.cfg, name)
            if found is not None:
                self._locations[found[0]] = found[1]
                return found[0]
        return experiment_id(self.cfg, name)

    def create_run(self, exp_id: str, name: str, tags: dict[str, str]) -> str:
        """A new RUNNING run (tag `mlflow.runName` = `name`); returns its id."""
        location = self._locations.get(exp_id)
        if self.sqlite is not None and location is not None:
            run_id = uuid.uuid4().hex
            full = {"mlflow.user": current_user(), **tags, "mlflow.runName": name}
            self.sqlite.create_run(run_id, exp_id, location, name, _now_ms(), full)
            return run_id
        return str(self.client.create_run(exp_id, run_name=name, tags=tags).info.run_id)

    def log(
        self,
        run_id: str,
        metrics: dict[str, float] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Log metrics (step 0, now), params and tags in one transaction (or `log_batch`)."""
        now = _now_ms()
        metrics, params, tags = metrics or {}, params or {}, tags or {}
        if not (metrics or params or tags):
            return
        if self.sqlite is not None:
            self.sqlite.write(
                [(run_id, k, float(v), now, 0) for k, v in metrics.items()],
                [(run_id, k, v) for k, v in params.items()],
                [(run_id, k, v) for k, v in tags.items()],
            )
            return
        from mlflow.entities import Metric, Param, RunTag

        log_batch(
            self.client,
            run_id,
            [Metric(k, float(v), now, 0) for k, v in metrics.items()],
            [Param(k, v) for k, v in params.items()],
            [RunTag(k, v) for k, v in tags.items()],
        )

    def end(self, run_id: str, status: str) -> None:
        """Set the run's final status (FINISHED, FAILED, KILLED) and end time."""
        if self.sqlite is not None:
            self.sqlite.end(run_id, status, _now_ms())
        else:
            self.client.set_terminated(run_id, status)

    def kill_tree(self, run_id: str, reason: str) -> list[str]:
        """Mark KILLED the runs of a pipeline run that are still RUNNING: the parent `run_id`,
        its step runs and the runs tracked inside the steps (a finished run keeps its status).

        Returns:
            The ids of the runs marked.
        """
        now = _now_ms()
        if self.sqlite is not None:
            con = self.sqlite._con()
            con.execute("BEGIN IMMEDIATE")
            try:
                found = [
                    str(row[0])
                    for row in con.execute(
                        "WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT t.run_uuid FROM tags t "
                        "JOIN tree ON t.key = 'mlflow.parentRunId' AND t.value = tree.id) "
                        "SELECT r.run_uuid FROM runs r JOIN tree ON r.run_uuid = tree.id "
                        "WHERE r.status = 'RUNNING'",
                        (run_id,),
                    )
                ]
                for one in found:
                    con.execute(
                        "UPDATE runs SET status = 'KILLED', end_time = ? "
                        "WHERE run_uuid = ? AND status = 'RUNNING'",
                        (now, one),
                    )
                    con.execute(
                        "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                        ("nb_mlops.killed_reason", reason, one),
                    )
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return found
        found = []
        todo = [run_id]
        while todo:
            one = todo.pop()
            run = self.client.get_run(one)
            if run.info.status == "RUNNING":
                self.client.set_tag(one, "nb_mlops.killed_reason", reason)
                self.client.set_terminated(one, "KILLED")
                found.append(one)
            children = self.client.search_runs(
                [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{one}'"
            )
            todo.extend(str(child.info.run_id) for child in children)
        return found

    def log_artifact(
        self, run_id: str, exp_id: str, path: Path, artifact_path: str | None = None
    ) -> None:
        """Copy a file into the run's artifacts (a local artifact store is written directly)."""
        location = self._locations.get(exp_id, "")
        if self.sqlite is not None and location.startswith("file:"):
            parsed = urllib.parse.urlparse(location)
            folder = Path(urllib.request.url2pathname(parsed.path)) / run_id / "artifacts"
            if artifact_path:
                folder = folder / artifact_path
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, folder / path.name)  # what MLflow's local repository does
            return
        self.client.log_artifact(run_id, str(path), artifact_path)

    def interactive_runs(
        self, exp_id: str, limit: int = 200
    ) -> list[tuple[str, str, dict[str, float], dict[str, str]]]:
        """The experiment's interactive runs, newest first: (run_id, mlflow.source.name, metrics,
        params)."""
        if self.sqlite is not None:
            con = self.sqlite._con()
            rows = con.execute(
                "SELECT r.run_uuid, COALESCE(s.value, '') FROM runs r "
                "JOIN tags m ON m.run_uuid = r.run_uuid AND m.key = 'nb_mlops.mode' "
                "AND m.value = 'interactive' "
                "LEFT JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'mlflow.source.name' "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' "
                "ORDER BY r.start_time DESC LIMIT ?",
                (int(exp_id), limit),
            ).fetchall()
            found = []
            for run_id, source in rows:
                metrics = {
                    str(k): float("nan") if nan else float(v)
                    for k, v, nan in con.execute(
                        "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?",
                        (run_id,),
                    )
                }
                params = {
                    str(k): str(v)
                    for k, v in con.execute(
                        "SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)
                    )
                }
                found.append((str(run_id), str(source), metrics, params))
            return found
        runs = self.client.search_runs(
            [exp_id],
            filter_string="tags.`nb_mlops.mode` = 'interactive'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
        return [
            (
                str(r.info.run_id),
                r.data.tags.get("mlflow.source.name", ""),
                dict(r.data.metrics),
                dict(r.data.params),
            )
            for r in runs
        ]

    def values(self, run_id: str, exp_id: str) -> list[tuple[dict[str, float], dict[str, str]]]:
        """(last metric values, tags) of a run, then of its nested runs, oldest first."""
        if self.sqlite is None:
            run = self.client.get_run(run_id)
            nested = sorted(
                self.client.search_runs(
                    [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
                ),
                key=lambda r: r.info.start_time or 0,
            )
            return [(dict(r.data.metrics), dict(r.data.tags)) for r in [run, *nested]]
        con = self.sqlite._con()
        children = [
            str(row[0])
            for row in con.execute(
                "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "AND t.key = 'mlflow.parentRunId' AND t.value = ? "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' "
                "ORDER BY r.start_time, r.run_uuid",
                (run_id, int(exp_id)),
            )
        ]
        found = []
        for one in [run_id, *children]:
            metrics = {
                str(k): float("nan") if nan else float(v)
                for k, v, nan in con.execute(
                    "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", (one,)
                )
            }
            tags = {
                str(k): str(v)
                for k, v in con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (one,))
            }
            found.append((metrics, tags))
        return found
