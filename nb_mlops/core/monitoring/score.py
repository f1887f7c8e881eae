"""Batch scoring, a production run: a registered model over a data snapshot, predictions stored as
a snapshot, the whole recorded as an MLflow run (`nb_mlops.mode=score`).

The model is loaded once (its files checked against the promotion digest), the input version is
restored, predicted in batches of rows, and the predictions (the input's index, a `prediction`
column or the model's own columns) are snapshotted with a lineage naming the model version, the
input version and the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.data.names import check_name, format_ref
from nb_mlops.core.monitoring import models

__all__ = ["ScoreResult", "score"]


@dataclass
class ScoreResult:
    """A scoring run.

    Attributes:
        model: registered model name.
        version: the version that scored.
        input: `NAME@vN` of the scored data.
        output: `NAME@vN` of the predictions.
        rows: rows scored.
        run_id: the MLflow run (`nb_mlops.mode=score`).
        seconds: the whole run; predict_seconds: inside `model.predict`.
        predictions: the predictions frame (not serialised by `as_dict`).
    """

    model: str
    version: str
    input: str
    output: str
    rows: int
    run_id: str
    seconds: float
    predict_seconds: float
    predictions: Any = field(default=None, repr=False)

    def summary(self) -> str:
        return (
            f"SCORED: {self.rows:,} rows of {self.input} with {self.model} v{self.version} "
            f"→ {self.output} in {self.seconds:.2f} s (run {self.run_id})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "predictions"}

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, Any]:
        import html

        return {
            "text/plain": self.summary(),
            "text/html": f"<div><b style='color:#1a7f37'>SCORED</b> {html.escape(self.summary()[8:])}</div>",
        }


def _as_frame(predictions: Any, index: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        frame = predictions.copy()
        frame.index = index
        return frame
    if isinstance(predictions, pd.Series):
        return pd.DataFrame({"prediction": predictions.to_numpy()}, index=index)
    values = np.asarray(predictions)
    if values.ndim == 2 and values.shape[1] > 1:
        return pd.DataFrame(
            {f"prediction_{i}": values[:, i] for i in range(values.shape[1])}, index=index
        )
    return pd.DataFrame({"prediction": values.reshape(len(index))}, index=index)


def score(
    model: str,
    data: str,
    out: str | None = None,
    *,
    batch_rows: int = 1_000_000,
    cfg: Config | None = None,
) -> ScoreResult:
    """Score a data snapshot with a registered model and store the predictions as a snapshot.

    Args:
        model: `NAME@champion` (or `NAME`), `NAME@ALIAS` or `NAME/VERSION`.
        data: `NAME[@vN]` of a DataFrame snapshot (latest version by default).
        out: the predictions' snapshot name (default: `<data name>-predictions`).
        batch_rows: rows per `predict` call (bounds memory on large inputs).
        cfg: project configuration.

    Returns:
        The scoring run: output version, rows, run id, timings and the predictions.

    Raises:
        NbMlopsError: an unknown model or snapshot, changed model files, a model that fails.

    Example:
        >>> done = nb_mlops.score("churn@champion", data="batch@v3")  # doctest: +SKIP
        >>> done.output                                               # doctest: +SKIP
        'batch-predictions@v1'
    """
    from nb_mlops.core.tracking import flush, track

    started = time.perf_counter()
    cfg = cfg or load_config()
    version = models.resolve(model, cfg=cfg)
    manifest = _frame_manifest(data, cfg)
    source = format_ref(manifest["name"], manifest["version"])
    target = check_name(out or f"{manifest['name']}-predictions")
    tags = {
        "nb_mlops.mode": "score",
        "nb_mlops.score.model": version.name,
        "nb_mlops.score.version": version.version,
        "nb_mlops.score.input": f"{source}:{manifest['digest']}",
    }
    loaded = models.load(version, cfg=cfg)
    with track(name=f"score-{version.name}-v{version.version}", autolog=False, tags=tags) as run:
        result = _predict_and_store(loaded, version, manifest, target, batch_rows, run, cfg)
    flush()
    result.seconds = time.perf_counter() - started
    return result


def _frame_manifest(data: str, cfg: Config) -> dict[str, Any]:
    """The manifest of the DataFrame snapshot `data` (pending snapshots written first)."""
    from nb_mlops.core.data import pending
    from nb_mlops.core.data.refs import open_store
    from nb_mlops.core.errors import DataError
    from nb_mlops.core.monitoring.drift import resolve_manifest

    pending.wait_all()
    manifest: dict[str, Any] = resolve_manifest(open_store(cfg), data)
    if manifest["kind"] != "frame":
        raise DataError(
            f"{format_ref(manifest['name'], manifest['version'])} is an array; score a DataFrame snapshot"
        )
    return manifest


def _predict_and_store(
    loaded: models.LoadedModel,
    version: models.ModelVersion,
    manifest: dict[str, Any],
    target: str,
    batch_rows: int,
    run: Any,
    cfg: Config,
) -> ScoreResult:
    """Predict over the input in batches, snapshot the predictions, record both on `run`."""
    from nb_mlops.core.data import restore, snapshot

    source = format_ref(manifest["name"], manifest["version"])
    frame = restore(source, cfg=cfg)
    began = time.perf_counter()
    predictions = models.predict(loaded, models.features(loaded, frame), batch_rows)
    predict_seconds = time.perf_counter() - began
    result_frame = _as_frame(predictions, frame.index)
    stored = snapshot(
        result_frame,
        target,
        message=f"predictions of {version.ref} on {source}",
        wait=True,
        lineage={
            "model": version.name,
            "model_version": version.version,
            "input": source,
            "input_digest": str(manifest["digest"]),
            "run_id": run.run_id,
        },
        cfg=cfg,
    )
    run.set_tag("nb_mlops.score.output", f"{stored.ref}:{stored.digest}")
    run.log(step=0, rows=float(len(frame)), predict_seconds=predict_seconds)
    return ScoreResult(
        model=version.name,
        version=version.version,
        input=source,
        output=stored.ref,
        rows=len(frame),
        run_id=run.run_id,
        seconds=0.0,
        predict_seconds=predict_seconds,
        predictions=result_frame,
    )
