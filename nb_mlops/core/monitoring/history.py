"""The monitoring journal of a model: `.nb_mlops/monitor/<model>.jsonl`, one line per record.

A check appends its record (verdict, data, reference, drifted features, decay, the actions its
policy decided) before any action runs, then one outcome record per action, carrying the check's
id. Lines are appended whole and fsynced; `checks` folds them, newest last, skipping torn lines.
This is the drift history over time (the MLflow run of each check holds the details).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nb_mlops.core.config import Config
from nb_mlops.core.files import append_line
from nb_mlops.core.promotion.journal import _safe_name, now_iso

__all__ = ["append", "checks", "journal_path"]


def journal_path(cfg: Config, model: str) -> Path:
    return cfg.store_dir / "monitor" / f"{_safe_name(model)}.jsonl"


def append(cfg: Config, model: str, record: dict[str, Any]) -> None:
    """Append one record (`record` = "check" or "action"; `id` = the check's id)."""
    path = journal_path(cfg, model)
    line = (json.dumps({"at": now_iso(), **record}, sort_keys=True, default=str) + "\n").encode()
    append_line(path, line)


def checks(model: str, *, cfg: Config | None = None) -> list[dict[str, Any]]:
    """Every check of `model`, oldest first, each with `actions`: its actions' latest outcomes.

    Example:
        >>> [c["verdict"] for c in checks("churn")]  # doctest: +SKIP
        ['ok', 'ok', 'drift']
    """
    from nb_mlops.core.config import load_config

    try:
        raw = journal_path(cfg or load_config(), model).read_bytes()
    except FileNotFoundError:
        return []
    found: dict[str, dict[str, Any]] = {}
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "id" not in record:
            continue
        if record.get("record") == "check":
            found[record["id"]] = {**record, "actions": list(record.get("actions", []))}
        elif record.get("record") == "action" and record["id"] in found:
            actions = found[record["id"]]["actions"]
            outcome = record.get("action", {})
            for index, planned in enumerate(actions):
                if planned.get("name") == outcome.get("name") and planned.get(
                    "event"
                ) == outcome.get("event"):
                    actions[index] = outcome
                    break
            else:
                actions.append(outcome)
    return list(found.values())
