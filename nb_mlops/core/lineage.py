"""Lineage of a registered model version: where it came from, from the registry back to the data.

model version ← pipeline run ← pipeline version ← notebook (path, sha256, git commit) ← data
snapshots (name@vN, digest) ← environment ← parameters. Read from the version's tags (written at
promotion), its pipeline run and the journal: three store reads, no model loading.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from nb_mlops.core import store
from nb_mlops.core.config import Config, load_config
from nb_mlops.core.durable import settle
from nb_mlops.core.errors import PromotionError
from nb_mlops.core.promotion.journal import Journal
from nb_mlops.core.promotion.registry import (
    CHAMPION,
    check_model_name,
    source_path,
    version_location,
)

__all__ = ["Lineage", "lineage", "parse_ref"]

_REF = re.compile(r"^(?P<name>[^@/]+)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/v?(?P<version>\d+))?\Z")


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """`NAME`, `NAME@ALIAS` or `NAME/VERSION` → (name, alias, version); NAME alone means @champion."""
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise PromotionError(
            f"{ref!r} is not a model reference; write NAME, NAME@ALIAS or NAME/VERSION (e.g. churn@champion)"
        )
    name = check_model_name(match.group("name"))
    version = match.group("version")
    alias = match.group("alias") or (None if version else CHAMPION)
    return name, alias, version


@dataclass
class Lineage:
    """Where one model version came from (every section is a plain dict, JSON-ready).

    Attributes:
        model, version, aliases: the registry entry.
        model_source, model_sha256: its artifacts and their digest at promotion.
        pipeline_run: id, status, mode, start/end times, experiment of the run that produced it.
        pipeline: name, content hash and artifact URI of the pipeline version (production pipeline).
        notebook: path, sha256, git commit/branch/dirty of the notebook the pipeline was built from.
        data: snapshots used: name, version (`name@vN`), digest, whether used for evaluation.
        environment: python version, environment hash, pip requirements of the model.
        parameters, metrics: of the pipeline run.
        promotion: the journal entry that last made this version champion (when, who, reason, ...).
    """

    model: str
    version: str
    aliases: list[str] = field(default_factory=list)
    model_source: str | None = None
    model_sha256: str | None = None
    pipeline_run: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    notebook: dict[str, Any] = field(default_factory=dict)
    data: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    promotion: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """The lineage as an indented plain-text chain (CLI without rich, magics without HTML)."""
        run, pipe, nb, env = self.pipeline_run, self.pipeline, self.notebook, self.environment
        lines = [
            f"model {self.model} version {self.version}"
            + (f" [{', '.join('@' + a for a in self.aliases)}]" if self.aliases else ""),
            f"  source {self.model_source} (sha256 {_short(self.model_sha256)})",
        ]
        if self.promotion:
            p = self.promotion
            lines.append(f"  {p['action']} {p['when']} by {p['who']}: {p.get('reason') or '-'}")
        lines += [
            f"← pipeline run {run.get('run_id')} ({run.get('status')}, mode {run.get('mode')})",
            f"← pipeline {pipe.get('name')} version {_short(pipe.get('hash'))}",
            f"← notebook {nb.get('path')} (sha256 {_short(nb.get('sha256'))}, git {_short(nb.get('git_commit'))})",
            "← data "
            + (
                ", ".join(f"{d['ref']} ({_short(d['digest'])})" for d in self.data)
                or "none recorded"
            ),
            f"← environment python {env.get('python') or '?'} (env {_short(env.get('env_sha256'))}, "
            f"{len(env.get('requirements', []))} requirements)",
            "← parameters "
            + (", ".join(f"{k}={v}" for k, v in sorted(self.parameters.items())) or "none"),
        ]
        return "\n".join(lines)


def _short(value: Any) -> str:
    return str(value)[:12] if value else "-"


def lineage(ref: str, *, cfg: Config | None = None) -> Lineage:
    """The lineage of a model version.

    Args:
        ref: `NAME` (= `NAME@champion`), `NAME@ALIAS` or `NAME/VERSION`.
        cfg: project configuration (default: the current project's).

    Raises:
        PromotionError: a malformed reference, or no such model, alias or version.

    Example:
        >>> nb_mlops.lineage("churn").pipeline["hash"]  # doctest: +SKIP
        '5f0c…'
    """
    name, alias, version = parse_ref(ref)
    cfg = store.ensure_store(cfg or load_config())
    settle()  # this process's own pending writes first
    client = store.client(cfg)
    mv = _model_version(client, name, alias, version)
    tags: dict[str, str] = dict(mv.tags or {})
    run_id = tags.get("nb_mlops.pipeline_run_id") or mv.run_id
    run = _run_or_none(client, run_id)
    run_tags: dict[str, str] = dict(run.data.tags) if run else {}

    def tag(*keys: str) -> str | None:
        for key in keys:
            value = tags.get(key) or run_tags.get(key)
            if value:
                return value
        return None

    return Lineage(
        model=name,
        version=str(mv.version),
        aliases=sorted(mv.aliases or []),
        model_source=version_location(client, mv),
        model_sha256=tags.get("nb_mlops.model_sha256"),
        pipeline_run=_pipeline_run(run_id, run, run_tags),
        pipeline={
            "name": tag("nb_mlops.pipeline"),
            "hash": tag("nb_mlops.pipeline_hash"),
            "artifacts": f"{run.info.artifact_uri}/pipeline" if run else None,
        },
        notebook=_notebook_of(tag),
        data=_data_used(tags, run_tags),
        environment={
            "python": tag("nb_mlops.python"),
            "env_sha256": tag("nb_mlops.env_sha256"),
            "requirements": _requirements(version_location(client, mv)),
        },
        parameters=dict(run.data.params) if run else {},
        metrics={k: float(v) for k, v in run.data.metrics.items()} if run else {},
        promotion=_last_promotion(cfg, name, str(mv.version)),
    )


def _notebook_of(tag: Callable[..., str | None]) -> dict[str, str | None]:
    """The notebook and the git state the run was made from (a pipeline's tags, else a run's)."""
    return {
        "path": tag("nb_mlops.notebook", "mlflow.source.name"),
        "sha256": tag("nb_mlops.notebook_sha256"),
        "git_commit": tag("nb_mlops.git_commit", "nb_mlops.git.commit", "mlflow.source.git.commit"),
        "git_branch": tag("nb_mlops.git_branch", "nb_mlops.git.branch"),
        "git_dirty": tag("nb_mlops.git_dirty", "nb_mlops.git.dirty"),
    }


def _model_version(client: Any, name: str, alias: str | None, version: str | None) -> Any:
    """The model version a reference names, or PromotionError saying what is missing."""
    from mlflow.exceptions import MlflowException

    try:
        if version is None:
            return client.get_model_version_by_alias(name, str(alias))
        return client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias @{alias}" if version is None else f"version {version}"
        raise PromotionError(
            f"model {name!r} has no {what}; see `nb-mlops history {name}` (promote a run first)"
        ) from exc


def _run_or_none(client: Any, run_id: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def _pipeline_run(run_id: str | None, run: Any, run_tags: dict[str, str]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": run_tags.get("nb_mlops.status") or (run.info.status if run else None),
        "mode": run_tags.get("nb_mlops.mode"),
        "experiment_id": run.info.experiment_id if run else None,
        "start_time": run.info.start_time if run else None,
        "end_time": run.info.end_time if run else None,
        "artifact_uri": run.info.artifact_uri if run else None,
    }


def _data_used(tags: dict[str, str], run_tags: dict[str, str]) -> list[dict[str, Any]]:
    """The data versions the model was trained and evaluated on (the version's tags win)."""
    eval_names = set(filter(None, (tags.get("nb_mlops.eval_data") or "").split(",")))
    data_tags = {
        **{k: v for k, v in run_tags.items() if k.startswith("nb_mlops.data.")},
        **{k: v for k, v in tags.items() if k.startswith("nb_mlops.data.")},
    }
    data = []
    for key, value in sorted(data_tags.items()):
        snapshot = key[len("nb_mlops.data.") :]
        version_text, _, digest = value.partition(":")
        data.append(
            {
                "name": snapshot,
                "ref": f"{snapshot}@{version_text}",
                "digest": digest,
                "eval": snapshot in eval_names,
            }
        )
    return data


def _requirements(source: str) -> list[str]:
    """The model's pip requirements, read as text from its folder (never loading the model)."""
    folder = source_path(source)
    if folder is None:
        return []
    try:
        text = (folder / "requirements.txt").read_text()
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _last_promotion(cfg: Config, model: str, version: str) -> dict[str, Any] | None:
    journal = Journal(cfg, model)
    if journal.pending():  # a promotion was killed mid-way: settle it before reading
        from nb_mlops.core.promotion import reconcile

        reconcile(model, cfg=cfg)
    for entry in reversed(journal.entries()):
        if entry.state == "done" and entry.moves_champion and entry.to_version == version:
            keep = ("id", "when", "who", "action", "from_version", "reason", "failed_gates")
            return {key: getattr(entry, key) for key in keep}
    return None
