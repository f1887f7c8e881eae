"""Production runs: execute the pipeline version stored with a model's champion, headless.

The version is the `pipeline/` artifact folder of the promoted pipeline run, fetched into
`.nb_mlops/`, checked against the content hash recorded at promotion, and run with
`run_pipeline(..., mode="production")` — the notebook as it is today plays no part.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nb_mlops.core import store
from nb_mlops.core.config import Config, load_config
from nb_mlops.core.errors import PipelineError, PromotionError
from nb_mlops.core.lineage import parse_ref
from nb_mlops.pipeline.params import parse_cli_values
from nb_mlops.pipeline.runner import PipelineRun, run_pipeline
from nb_mlops.pipeline.spec import SPEC_FILE, load_pipeline, pipeline_hash

__all__ = ["fetch_production_pipeline", "run_production"]


def run_production(
    model: str,
    params: Mapping[str, Any] | None = None,
    *,
    executor: str = "local",
    promote: bool = False,
    reason: str | None = None,
    cache: bool = False,
    from_strings: bool = True,
    data: Mapping[str, str] | None = None,
    cfg: Config | None = None,
    **run_options: Any,
) -> PipelineRun:
    """Run the production pipeline of `model` (its champion's pipeline version, as stored).

    Args:
        model: `NAME` (its @champion), `NAME@ALIAS` or `NAME/VERSION`.
        params: overrides; every other parameter takes the promoted run's value.
        executor: `local` or `dask://HOST:PORT`.
        promote: promote this run's model afterwards, through the gates (never otherwise).
        reason: journaled with the promotion when `promote` is set.
        cache: reuse cached steps (off by default: a production run recomputes).
        from_strings: strings in `params` are command-line text (`"0.5"` is 0.5), else typed.
        data: data pins, NAME → OTHER@vN: the steps' `restore(NAME)` read OTHER@vN (a retrain
            on new data); without, they read what the pipeline names.
        cfg: project configuration.
        run_options: passed to `run_pipeline` (timeout, cell_timeout, max_parallel, ...).

    Returns:
        The pipeline run (tags `nb_mlops.mode=production` and `nb_mlops.production.*` linking it to
        the model version). A failed run does not raise; `promote` is then skipped.

    Raises:
        PromotionError: no such model/alias/version, or it carries no production pipeline.
        PipelineError: the stored pipeline does not match the hash recorded at promotion.
        GatesBlocked: `promote` was set and a gate failed.

    Example:
        >>> run = run_production("churn", {"C": 0.5})   # doctest: +SKIP
        >>> run.status                                   # doctest: +SKIP
        'SUCCEEDED'
    """
    cfg = store.ensure_store(cfg or load_config())
    folder, info = fetch_production_pipeline(model, cfg=cfg)
    run = run_pipeline(
        folder,
        _values(folder, info, params, cfg),
        executor=executor,
        mode="production",
        tags=_tags(info),
        cache=cache,
        from_strings=from_strings,
        data=data,
        cfg=cfg,
        **run_options,
    )
    if promote and run.succeeded:
        _promote(run, info, reason or f"production run of {model}", cfg)
    return run


def _values(
    folder: Path, info: dict[str, Any], params: Mapping[str, Any] | None, cfg: Config
) -> dict[str, Any]:
    """The promoted run's parameter values, with `params` over them."""
    # the promoted run's values as MLflow keeps them: text, read as the command line's
    values = parse_cli_values(load_pipeline(folder, cfg).parameters, text=info["params"])
    values.update(params or {})
    return values


def _tags(info: dict[str, Any]) -> dict[str, str]:
    """Tags linking a production run to the model version it runs the pipeline of."""
    tags = {
        "nb_mlops.production.model": info["model"],
        "nb_mlops.production.version": info["version"],
        "nb_mlops.production.pipeline_run_id": info["pipeline_run_id"],
    }
    if info.get("source_name") and not info["source_resolves"]:
        tags["mlflow.source.name"] = info["source_name"]
    return tags


def _promote(run: PipelineRun, info: dict[str, Any], reason: str, cfg: Config) -> None:
    from nb_mlops.core.promotion import promote as do_promote

    do_promote(run.run_id, model=info["model"], reason=reason, cfg=cfg)


def fetch_production_pipeline(
    model: str, *, cfg: Config | None = None
) -> tuple[Path, dict[str, Any]]:
    """Fetch (once) and verify the pipeline version of a model version.

    Returns:
        (the pipeline folder, facts: model, version, pipeline_run_id, pipeline_hash, params,
        source_name and whether the folder's relative notebook path resolves to it).
    """
    from mlflow.exceptions import MlflowException

    cfg = store.ensure_store(cfg or load_config())
    client = store.client(cfg)
    name, alias, version = parse_ref(model)
    try:
        mv = (
            client.get_model_version_by_alias(name, str(alias))
            if version is None
            else client.get_model_version(name, version)
        )
    except MlflowException as exc:
        what = f"@{alias}" if version is None else f"version {version}"
        raise PromotionError(
            f"model {name!r} has no {what}: promote a pipeline run first (`nb-mlops promote --latest PIPELINE --model {name}`)"
        ) from exc
    tags = mv.tags or {}
    run_id = tags.get("nb_mlops.pipeline_run_id") or mv.run_id
    expected = tags.get("nb_mlops.pipeline_hash")
    if not run_id or not expected:
        raise PromotionError(
            f"{name} version {mv.version} carries no production pipeline (no nb_mlops.pipeline_hash); "
            "it was not promoted by nb_mlops — promote a pipeline run"
        )
    run = client.get_run(run_id)
    source_name = run.data.tags.get("mlflow.source.name", "")
    key = f"{name}-v{mv.version}-{expected[:12]}"
    target = _target_folder(cfg, run_id, source_name, key, client)
    if not (target / SPEC_FILE).is_file():
        with tempfile.TemporaryDirectory(dir=cfg.store_dir, prefix=".fetch-") as tmp:
            got = Path(client.download_artifacts(run_id, "pipeline", tmp))
            _verify(got, expected, name, str(mv.version))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(got, target)
            except OSError:  # another process fetched it first
                if not (target / SPEC_FILE).is_file():
                    raise
    _verify(target, expected, name, str(mv.version))
    spec = load_pipeline(target, cfg)
    resolves = bool(source_name) and spec.notebook_path == Path(source_name).resolve()
    return target, {
        "model": name,
        "version": str(mv.version),
        "pipeline_run_id": run_id,
        "pipeline_hash": expected,
        "params": dict(run.data.params),
        "source_name": source_name,
        "source_resolves": resolves,
    }


def _verify(folder: Path, expected: str, model: str, version: str) -> None:
    spec = load_pipeline(folder)
    actual = pipeline_hash([p for p in spec.files() if p.is_file()], spec.dir)
    if actual != expected:
        raise PipelineError(
            f"the stored pipeline of {model} version {version} does not match the hash recorded at "
            f"promotion ({expected[:12]}… recorded, {actual[:12]}… stored); refusing to run it"
        )


def _target_folder(cfg: Config, run_id: str, source_name: str, key: str, client: Any) -> Path:
    """Where to put the pipeline so that its relative `notebook` path still names the source
    notebook: then step kernels start in the notebook's folder and runs record the right source."""
    fallback = cfg.store_dir / "production" / key
    if not source_name:
        return fallback
    with tempfile.TemporaryDirectory(dir=cfg.store_dir, prefix=".spec-") as tmp:
        try:
            spec_file = Path(client.download_artifacts(run_id, f"pipeline/{SPEC_FILE}", tmp))
        except Exception:  # noqa: BLE001 - a missing spec is reported by the fetch itself
            return fallback
        import yaml

        notebook = str(
            (yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}).get("notebook", "")
        )
    parts = Path(notebook).parts
    ups = len(parts) - len([p for p in parts if p != ".."])
    rest = parts[ups:]
    source = Path(source_name).resolve()
    if ups < 2 or not rest or source.parts[-len(rest) :] != rest:
        return fallback
    base = Path(*source.parts[: len(source.parts) - len(rest)])
    try:
        base.relative_to(cfg.root)
    except ValueError:
        return fallback
    # `ups` components below `base`: .nb_mlops/[production/...]/<key>
    middle = ["production"] * (ups - 2)
    folder = base.joinpath(".nb_mlops", *middle, key) if base == cfg.root else None
    return folder if folder is not None else fallback
