"""Retraining for monitoring policies: run a model's production pipeline headless, linked to the
check that asked for it.

The run is the champion's stored pipeline version (`run_production`); it is tagged with the check
(`nb_mlops.monitor.trigger`), the data that triggered it and the reason. The pipeline reads its
snapshots as its steps name them (`restore("train")` is the latest version of `train`):
snapshotting the new data under the training name is what points the run at it.
"""

from __future__ import annotations

from typing import Any

from nb_mlops.core import store
from nb_mlops.core.config import Config, load_config

__all__ = ["retrain"]


def retrain(
    model: str,
    data: str,
    *,
    reference: str | None = None,
    trigger: str | None = None,
    reason: str = "",
    cfg: Config | None = None,
) -> dict[str, Any]:
    """Run `model`'s production pipeline once, as a retrain.

    Args:
        model: `NAME` (its champion's pipeline), `NAME@ALIAS` or `NAME/VERSION`.
        data: `NAME@vN` of the data that triggered the retrain (recorded on the run).
        reference: `NAME@vN` of the champion's training data: the input `data` is meant to
            replace (recorded; pointing the run at `data` needs the runner's data overrides).
        trigger: the id of the check's MLflow run.
        reason: why (recorded on the run).
        cfg: project configuration.

    Returns:
        {"run_id", "status", "error", "repointed"}: `repointed` says whether the run's data
        inputs were pointed at `data` (False: the pipeline read its snapshots as written).
    """
    from nb_mlops.pipeline.production import run_production

    cfg = cfg or load_config()
    run = run_production(model, cfg=cfg)
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
    return {"run_id": run.run_id, "status": run.status, "error": run.error, "repointed": False}
