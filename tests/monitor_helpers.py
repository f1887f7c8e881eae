"""A real champion for monitoring tests: a frame snapshotted as training data, a scikit-learn model
fitted on it and logged in a pipeline run shaped like the runner's, promoted through the gates."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from promotion_helpers import make_pipeline_run

from nb_mlops.core import store
from nb_mlops.core.config import Config, load_config


def clean_environment(mp: Any) -> None:
    """What the autouse fixture does per test, for module-scoped fixtures that run before it:
    `mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI, which would point the next module's
    project at the previous one's store."""
    import os

    for name in list(os.environ):
        if name.startswith(("NB_MLOPS_", "MLFLOW_")):
            mp.delenv(name, raising=False)


def make_frame(n: int, *, shift: float = 0.0, share: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """Two numeric features, a string and a categorical feature, and a label that depends on them
    (`shift` moves `x`'s mean in standard deviations, `share` is the share of `c == "a"`)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) + shift
    y = rng.exponential(1.0, n)
    c = np.where(rng.random(n) < share, "a", "b")
    k = rng.choice(["p", "q", "r"], n)
    target = ((x + 0.5 * (c == "a") + rng.normal(0, 0.5, n)) > 0.25).astype(int)
    return pd.DataFrame(
        {
            "x": x,
            "y": y,
            "c": pd.array(c, dtype="str"),
            "k": pd.Categorical(k),
            "target": target,
        }
    )


def fit_model(frame: pd.DataFrame, *, flip: bool = False) -> Any:
    """A logistic regression on the numeric features and `c` (one-hot); `flip` learns the label
    inverted, a model that scores badly on fresh data."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    prep = ColumnTransformer(
        [("num", "passthrough", ["x", "y"]), ("cat", OneHotEncoder(), ["c"])], remainder="drop"
    )
    model = make_pipeline(prep, LogisticRegression())
    target = 1 - frame["target"] if flip else frame["target"]
    return model.fit(frame[["x", "y", "c", "k"]], target)


def make_champion(
    frame: pd.DataFrame,
    *,
    model_name: str = "churn",
    snapshot_name: str = "train",
    flip: bool = False,
    metrics: dict[str, float] | None = None,
    model: Any = None,
    trusted: list[str] | None = None,
    cfg: Config | None = None,
) -> tuple[str, str]:
    """Snapshot `frame` as training data, log a fitted model (default `fit_model(frame)`) in a
    pipeline run that used it, and promote the run. Returns (pipeline run id, registered version).

    `trusted`: types skops may load (MLflow refuses to save tree models without them)."""
    import mlflow

    from nb_mlops.core.data import snapshot
    from nb_mlops.core.promotion import promote

    cfg = cfg or load_config()
    snap = snapshot(frame, snapshot_name, context="train", wait=True, cfg=cfg)
    model = model if model is not None else fit_model(frame, flip=flip)
    if metrics is None:
        predicted = model.predict(frame[["x", "y", "c", "k"]])
        metrics = {"accuracy": float((predicted == frame["target"]).mean())}
    parent = make_pipeline_run(
        cfg, data={snapshot_name: (snap.tag_value, "train")}, metrics=metrics, log_model=False
    )
    client = store.client(cfg)
    (step,) = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
    )
    mlflow.set_tracking_uri(cfg.tracking_uri)
    with mlflow.start_run(run_id=step.info.run_id):
        mlflow.sklearn.log_model(
            model, name="model", pip_requirements=["scikit-learn"], skops_trusted_types=trusted
        )
    decision = promote(parent, model=model_name, reason="test champion", cfg=cfg)
    return parent, str(decision.version)
