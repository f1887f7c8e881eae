"""The model a scoring run or a check uses: a registry version, its bytes verified, loaded once.

`resolve` turns `NAME`, `NAME@ALIAS` or `NAME/VERSION` into a registry version; `load` checks the
version's files against the digest recorded at promotion (a model is a pickle: changed bytes are
refused before they run) and loads it as an MLflow pyfunc, kept for the process's next call;
`features` picks the columns the model was fitted on from a frame.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from nb_mlops.core import store
from nb_mlops.core.config import Config
from nb_mlops.core.errors import DataError, MonitorError, PromotionError

__all__ = [
    "LoadedModel",
    "ModelVersion",
    "features",
    "load",
    "predict",
    "resolve",
    "signature_inputs",
]

_CACHE: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
_CACHE_SIZE = 4
_lock = threading.Lock()


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version.

    Attributes:
        name: registered model name.
        version: its version number (text, as MLflow gives it).
        alias: the alias it was reached through, or None for `NAME/VERSION`.
        source: the artifact URI of its files.
        run_id: the pipeline run it was promoted from.
        sha256: the digest of its files recorded at promotion, or None.
        tags: the version's tags.
    """

    name: str
    version: str
    alias: str | None
    source: str
    run_id: str | None
    sha256: str | None
    tags: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        """`NAME/VERSION`."""
        return f"{self.name}/{self.version}"


@dataclass
class LoadedModel:
    """A loaded pyfunc model and what is known of its inputs."""

    version: ModelVersion
    pyfunc: Any
    inputs: list[str] | None

    @property
    def raw(self) -> Any:
        try:
            return self.pyfunc.get_raw_model()
        except Exception:  # noqa: BLE001 - flavours without a raw model
            return None


def resolve(ref: str, *, cfg: Config) -> ModelVersion:
    """The registry version `ref` names (`NAME` means `NAME@champion`).

    Raises:
        PromotionError: a malformed reference, or no such model, alias or version.
    """
    from mlflow.exceptions import MlflowException

    from nb_mlops.core.lineage import parse_ref
    from nb_mlops.core.promotion.registry import DIGEST_TAG, version_location

    name, alias, version = parse_ref(ref)
    client = store.client(store.ensure_store(cfg))
    try:
        if version is None:
            mv = client.get_model_version_by_alias(name, str(alias))
        else:
            mv = client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias @{alias}" if version is None else f"version {version}"
        raise PromotionError(
            f"model {name!r} has no {what}; promote a pipeline run first "
            f"(`nb-mlops promote --latest PIPELINE --model {name}`), see `nb-mlops history {name}`"
        ) from exc
    tags = dict(mv.tags or {})
    return ModelVersion(
        name=name,
        version=str(mv.version),
        alias=alias if version is None else None,
        source=version_location(client, mv),  # `models:/<id>` resolved to its files
        run_id=tags.get("nb_mlops.pipeline_run_id") or mv.run_id,
        sha256=tags.get(DIGEST_TAG),
        tags=tags,
    )


def load(version: ModelVersion, *, cfg: Config) -> LoadedModel:
    """Load a version once per process (its files verified against the promotion digest).

    Raises:
        MonitorError: the files changed since promotion, or MLflow cannot load them.
    """
    key = (version.source, version.sha256 or "")
    with _lock:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    from nb_mlops.core.promotion.registry import source_digest

    if version.sha256:
        try:
            actual = source_digest(version.source, cfg.tracking_uri)
        except PromotionError as exc:
            raise MonitorError(f"{version.ref}: {exc}") from exc
        if actual != version.sha256:
            raise MonitorError(
                f"{version.ref}: its files do not match the digest recorded at promotion "
                f"({version.sha256[:12]}… recorded, {actual[:12]}… now); refusing to load them"
            )
    from nb_mlops.core.tracking import _mlflow_ready, await_warm_up_finished

    await_warm_up_finished()  # its autolog set-up imports scikit-learn, as loading a model does
    _mlflow_ready(cfg)  # imported once, by one thread, pointed at this store
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(version.source)
    except Exception as exc:  # noqa: BLE001 - MLflow and the flavours raise many types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MonitorError(f"cannot load {version.ref} from {version.source}: {first}") from exc
    loaded = LoadedModel(version, model, _inputs(model))
    with _lock:
        _CACHE[key] = loaded
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return loaded


def signature_inputs(version: ModelVersion) -> list[str] | None:
    """The input columns of a version's signature, read from its `MLmodel` file without loading
    the model (None when it has no signature, or its files are remote)."""
    import json

    import yaml

    from nb_mlops.core.promotion.registry import source_path

    folder = source_path(version.source)
    if folder is None:
        return None
    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8")) or {}
        inputs = json.loads((meta.get("signature") or {}).get("inputs") or "null")
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(inputs, list):
        return None
    names = [i.get("name") for i in inputs if isinstance(i, dict)]
    return [str(n) for n in names] if names and all(names) else None


def _inputs(model: Any) -> list[str] | None:
    """Input column names from the signature, else from the fitted estimator."""
    try:
        schema = model.metadata.get_input_schema()
    except Exception:  # noqa: BLE001 - no signature
        schema = None
    names = [n for n in (getattr(schema, "input_names", lambda: [])() or []) if n] if schema else []
    if names and all(isinstance(n, str) for n in names):
        return list(names)
    try:
        raw = model.get_raw_model()
    except Exception:  # noqa: BLE001 - flavours without a raw model
        return None
    fitted = getattr(raw, "feature_names_in_", None)
    return [str(n) for n in fitted] if fitted is not None else None


def features(model: LoadedModel, frame: Any, drop: tuple[str, ...] = ()) -> Any:
    """The columns of `frame` the model takes, in its order (all but `drop` when unknown).

    Raises:
        DataError: the frame lacks columns the model needs (they are listed).
    """
    if model.inputs is None:
        keep = [c for c in frame.columns if c not in drop]
        return frame[keep] if len(keep) != len(frame.columns) else frame
    lacking = [c for c in model.inputs if c not in frame.columns]
    if lacking:
        raise DataError(
            f"the data lacks {len(lacking)} column(s) {model.version.ref} was fitted on: "
            f"{', '.join(map(str, lacking[:10]))}; snapshot data with those columns"
        )
    if list(frame.columns) == model.inputs:
        return frame
    return frame[model.inputs]


def predict(model: LoadedModel, frame: Any, batch_rows: int = 1_000_000) -> Any:
    """`model.predict` over `frame`, `batch_rows` rows at a time; one array or frame back.

    Raises:
        MonitorError: the model raised (its message is kept).
    """
    import numpy as np
    import pandas as pd

    try:
        if len(frame) <= batch_rows:
            return model.pyfunc.predict(frame)
        parts = [
            model.pyfunc.predict(frame.iloc[start : start + batch_rows])
            for start in range(0, len(frame), batch_rows)
        ]
    except (DataError, MonitorError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the model raises
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MonitorError(
            f"{model.version.ref} failed to predict: {type(exc).__name__}: {first}"
        ) from exc
    if isinstance(parts[0], pd.DataFrame):
        return pd.concat(parts)
    if isinstance(parts[0], pd.Series):
        return pd.concat(parts)
    return np.concatenate([np.asarray(p) for p in parts])
