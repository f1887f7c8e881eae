"""Retraining for monitoring policies: run a model's production pipeline headless on the new
data, linked to the check that asked for it.

The run is the champion's stored pipeline version (`run_production`), re-pointed with a data
pin: the snapshot the champion trained on (the reference's name, or the name its own pins
re-pointed to the reference) reads the new data's version, so `restore("train")` in a step reads
e.g. `batch@v2`, and the run's lineage names it. It is tagged with the check
(`nb_mlops.monitor.trigger`), the data that triggered it and the reason.
"""

from __future__ import annotations

import json
from typing import Any

from nb_mlops.core import store
from nb_mlops.core.config import Config, load_config
from nb_mlops.core.data.names import format_ref, parse_ref

__all__ = ["retrain", "retrain_pins"]


def retrain_pins(
    data: str, reference: str | None, earlier: dict[str, str] | None = None
) -> dict[str, str]:
    """The data pin of a retrain: the reference's name → `data` (`train@v1`, `batch@v2` →
    {"train": "batch@v2"}); without a reference, the data's own name → `data`; no pin when
    `data` names no version (the pipeline then reads its snapshots as written).

    `earlier`: the champion's own pins. A champion trained re-pointed (`train` → `batch@v1`)
    names `batch@v1` as its data, but its steps restore `train`: that name is pinned again.
    """
    name, version = parse_ref(data)
    if version is None:
        return {}
    pinned = parse_ref(reference)[0] if reference else name
    for restored, ref in (earlier or {}).items():
        if ref == reference:
            pinned = restored
    return {pinned: format_ref(name, version)}


def _champion_pins(model: str, cfg: Config) -> dict[str, str]:
    """The data pins the pipeline run behind `model`'s version ran with (none: as written)."""
    from nb_mlops.pipeline.production import fetch_production_pipeline
    from nb_mlops.pipeline.runner import PINS_TAG

    _, info = fetch_production_pipeline(model, cfg=cfg)
    tags = store.client(cfg).get_run(info["pipeline_run_id"]).data.tags
    found = json.loads(tags.get(PINS_TAG) or "{}")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def retrain(
    model: str,
    data: str,
    *,
    reference: str | None = None,
    trigger: str | None = None,
    reason: str = "",
    cfg: Config | None = None,
) -> dict[str, Any]:
    """Run `model`'s production pipeline once on `data`, as a retrain.

    Args:
        model: `NAME` (its champion's pipeline), `NAME@ALIAS` or `NAME/VERSION`.
        data: `NAME@vN` of the data that triggered the retrain: the run reads it (and records it).
        reference: `NAME@vN` of the champion's training data: the input `data` replaces (the
            steps' `restore(NAME)` of the reference's name read `data`).
        trigger: the id of the check's MLflow run.
        reason: why (recorded on the run).
        cfg: project configuration.

    Returns:
        {"run_id", "status", "error", "repointed"}: `repointed` says whether the run's data
        inputs were pinned to `data` (False: `data` named no version, the pipeline read its
        snapshots as written).
    """
    from nb_mlops.pipeline.production import run_production

    cfg = cfg or load_config()
    pins = retrain_pins(data, reference, _champion_pins(model, cfg) if reference else None)
    run = run_production(model, data=pins or None, cfg=cfg)
    client = store.client(cfg)
    tags = {
        "nb_mlops.monitor.trigger": trigger or "",
        "nb_mlops.monitor.data": data,
        "nb_mlops.monitor.reference": reference or "",
        "nb_mlops.monitor.reason": reason[:4000],
    }
    for key, value in tags.items():
        if value:
            client.set_tag(run.run_id, key, value)
    return {
        "run_id": run.run_id,
        "status": run.status,
        "error": run.error,
        "repointed": bool(pins),
    }
