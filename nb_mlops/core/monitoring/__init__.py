"""Closing the loop after promotion: batch scoring, drift and decay checks, policies and alerts.

`score` runs a registered model over a data snapshot (an MLflow run, predictions snapshotted);
`monitor` checks the champion on new data (drift against its training snapshot from the snapshot
sketches, decay with labels), records the check and lets the policy act (alerts, rollback,
retrain); `drift` compares any two frame versions. Modules: `settings` (the config table), `stats`
(statistics of one feature), `drift`, `decay`, `models` (resolve and load a version), `score`,
`check` (monitor), `report` (text/HTML), `alerts` (webhooks), `policy`, `actions` (retrain,
promote, rollback), `history` (the monitoring journal). Importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DriftReport",
    "MonitorResult",
    "MonitorSettings",
    "ScoreResult",
    "checks",
    "drift",
    "monitor",
    "parse_settings",
    "score",
]

_LAZY = {
    "DriftReport": "nb_mlops.core.monitoring.drift",
    "drift": "nb_mlops.core.monitoring.drift",
    "MonitorResult": "nb_mlops.core.monitoring.check",
    "monitor": "nb_mlops.core.monitoring.check",
    "MonitorSettings": "nb_mlops.core.monitoring.settings",
    "parse_settings": "nb_mlops.core.monitoring.settings",
    "ScoreResult": "nb_mlops.core.monitoring.score",
    "score": "nb_mlops.core.monitoring.score",
    "checks": "nb_mlops.core.monitoring.history",
}

if TYPE_CHECKING:  # pragma: no cover
    from nb_mlops.core.monitoring.check import MonitorResult, monitor
    from nb_mlops.core.monitoring.drift import DriftReport, drift
    from nb_mlops.core.monitoring.history import checks
    from nb_mlops.core.monitoring.score import ScoreResult, score
    from nb_mlops.core.monitoring.settings import MonitorSettings, parse_settings


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nb_mlops.core.monitoring' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
