"""Promotion to production: gates, the `champion` alias, the journal, rollback and history.

`promote` takes a successful pipeline run, judges it against `[tool.nb_mlops.gates]`, registers its
model and moves `champion` under a per-model lock with a write-ahead journal; `rollback` moves it back;
`history` reads the journal; with `[promotion] require_approval`, a promotion becomes a request
that `approve` or `reject` decides (`approvals` lists them). Modules: `gates` (pure verdicts),
`journal` (JSONL), `registry` (MLflow reads/writes, source and digest checks), `service` (the
operations), `access` (who may), `approval` (requests and their approval).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nb_mlops.core.promotion.approval import ApprovalRequest, approvals, approve, reject
    from nb_mlops.core.promotion.gates import GateResult, GateSpec, parse_gates
    from nb_mlops.core.promotion.journal import Journal, JournalEntry
    from nb_mlops.core.promotion.service import (
        Decision,
        PromotionBlocked,
        evaluate,
        history,
        promote,
        reconcile,
        rollback,
    )

# imported on first use: reading the configuration checks the gates table (`gates`), which must
# not pull in the store and registry code
_HOME = {
    "ApprovalRequest": "approval",
    "approvals": "approval",
    "approve": "approval",
    "reject": "approval",
    "GateResult": "gates",
    "GateSpec": "gates",
    "parse_gates": "gates",
    "Journal": "journal",
    "JournalEntry": "journal",
    "Decision": "service",
    "PromotionBlocked": "service",
    "evaluate": "service",
    "history": "service",
    "promote": "service",
    "reconcile": "service",
    "rollback": "service",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "ApprovalRequest",
    "Decision",
    "GateResult",
    "GateSpec",
    "Journal",
    "JournalEntry",
    "PromotionBlocked",
    "approvals",
    "approve",
    "evaluate",
    "history",
    "parse_gates",
    "promote",
    "reconcile",
    "reject",
    "rollback",
]
