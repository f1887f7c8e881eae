"""Pipeline runs shaped as the runner makes them, whose step tracks a fit through the same
`track()` a step kernel's `%%track` calls (with the runner's environment), in this process."""

from __future__ import annotations

import os
from typing import Any

from nb_mlops.core import store, tracking
from nb_mlops.core.config import Config


def tracked_pipeline_run(
    cfg: Config,
    source: str,
    namespace: dict[str, Any],
    *,
    pipeline: str = "p",
    name: str = "train",
    status: str = "SUCCEEDED",
    autolog: bool = True,
) -> str:
    """Create a pipeline run and a step run, run `source` in `namespace` inside `track()` as the
    step's tracked cell (`autolog=False`: as `%%track --no-autolog`), end both runs; return the
    pipeline run's id."""
    client = store.client(cfg)
    exp = store.experiment_id(cfg, "steps")
    pipeline = pipeline.replace("_", "-")
    parent = client.create_run(
        exp,
        run_name=f"{pipeline}-run",
        tags={"nb_mlops.mode": "pipeline", "nb_mlops.pipeline": pipeline},
    ).info.run_id
    step = client.create_run(
        exp,
        tags={
            "mlflow.parentRunId": parent,
            "nb_mlops.step": "train",
            "nb_mlops.pipeline": pipeline,
            "nb_mlops.mode": "pipeline",
        },
    ).info.run_id
    env = {
        "NB_MLOPS_RUN_ID": step,
        "NB_MLOPS_PARENT_RUN_ID": parent,
        "NB_MLOPS_MODE": "pipeline",
        "NB_MLOPS_PIPELINE": pipeline,
        "NB_MLOPS_STEP": "train",
        "NB_MLOPS_EXPERIMENT": "steps",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    tracking.bind_kernel(namespace)
    try:
        with tracking.track(name=name, cell=source, autolog=autolog):
            exec(source, namespace)  # noqa: S102 - the test's own cell
        tracking.flush()
    finally:
        tracking.bind_kernel(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    client.set_terminated(step)
    client.set_tag(parent, "nb_mlops.status", status)
    client.set_terminated(parent, "FINISHED" if status == "SUCCEEDED" else "FAILED")
    return str(parent)
