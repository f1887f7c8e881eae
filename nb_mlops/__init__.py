"""nb_mlops: from notebook to production inside Jupyter.

Experiments tracked into MLflow (`%%track`, `nb_mlops.track`), data versions (`%snapshot`),
notebook → papermill pipelines (`nb-mlops pipeline`), gated promotion with a journal and rollback,
batch scoring and monitoring of the champion (`nb_mlops.score`, `nb_mlops.monitor`).
Importing this package is cheap: every public name is loaded on first use.

Example:
    >>> import nb_mlops
    >>> with nb_mlops.track(name="baseline"):          # doctest: +SKIP
    ...     nb_mlops.log(accuracy=0.93)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → module that defines it (imported on first access, then cached in this module)
_LAZY: dict[str, str] = {
    "load_config": "nb_mlops.core.config",
    "Config": "nb_mlops.core.config",
    "NbMlopsError": "nb_mlops.core.errors",
    "track": "nb_mlops.core.tracking",
    "log": "nb_mlops.core.tracking",
    "flush": "nb_mlops.core.durable",
    "runs": "nb_mlops.core.runs",
    "snapshot": "nb_mlops.core.data",
    "restore": "nb_mlops.core.data",
    "snapshots": "nb_mlops.core.data",
    "diff": "nb_mlops.core.data",
    "Snapshot": "nb_mlops.core.data",
    "build_pipeline": "nb_mlops.pipeline",
    "run_pipeline": "nb_mlops.pipeline",
    "promote": "nb_mlops.core.promotion",
    "rollback": "nb_mlops.core.promotion",
    "history": "nb_mlops.core.promotion",
    "approve": "nb_mlops.core.promotion",
    "reject": "nb_mlops.core.promotion",
    "approvals": "nb_mlops.core.promotion",
    "lineage": "nb_mlops.core.lineage",
    "score": "nb_mlops.core.monitoring",
    "monitor": "nb_mlops.core.monitoring",
}

__all__ = sorted([*_LAZY, "__version__", "load_ipython_extension"])

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from nb_mlops.core.config import Config as Config
    from nb_mlops.core.config import load_config as load_config
    from nb_mlops.core.data import Snapshot as Snapshot
    from nb_mlops.core.data import diff as diff
    from nb_mlops.core.data import restore as restore
    from nb_mlops.core.data import snapshot as snapshot
    from nb_mlops.core.data import snapshots as snapshots
    from nb_mlops.core.durable import flush as flush
    from nb_mlops.core.errors import NbMlopsError as NbMlopsError
    from nb_mlops.core.lineage import lineage as lineage
    from nb_mlops.core.monitoring import monitor as monitor
    from nb_mlops.core.monitoring import score as score
    from nb_mlops.core.promotion import approvals as approvals
    from nb_mlops.core.promotion import approve as approve
    from nb_mlops.core.promotion import history as history
    from nb_mlops.core.promotion import promote as promote
    from nb_mlops.core.promotion import reject as reject
    from nb_mlops.core.promotion import rollback as rollback
    from nb_mlops.core.runs import runs as runs
    from nb_mlops.core.tracking import log as log
    from nb_mlops.core.tracking import track as track
    from nb_mlops.pipeline import build_pipeline as build_pipeline
    from nb_mlops.pipeline import run_pipeline as run_pipeline


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nb_mlops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nb_mlops`: register the magics and start the background warm-up."""
    from nb_mlops.magics import load_ipython_extension as load

    load(ipython)
