"""Promotion to production: gates, the `champion` alias, the journal, rollback and history.

`promote` takes a successful pipeline run, judges it against `[tool.nb_mlops.gates]`, registers its
model and moves `champion` under a per-model lock with a write-ahead journal; `rollback` moves it back;
`history` reads the journal. Modules: `gates` (pure verdicts), `journal` (JSONL), `registry` (MLflow
reads/writes, source and digest checks), `service` (the operations).
"""

from __future__ import annotations

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

__all__ = [
    "Decision",
    "GateResult",
    "GateSpec",
    "Journal",
    "JournalEntry",
    "PromotionBlocked",
    "evaluate",
    "history",
    "parse_gates",
    "promote",
    "reconcile",
    "rollback",
]
