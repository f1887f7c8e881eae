"""The promotion journal: an append-only, fsynced JSONL file per model, `.nb_mlops/journal/<model>.jsonl`.

Every promotion, forced promotion, blocked attempt and rollback is one entry. Moves of the `champion`
alias are write-ahead: the entry is appended as `pending` before the alias moves and marked `done`
(or `aborted`) after, by a second, short record carrying the same id. A reader folds the records by
id; `reconcile` settles pending entries left by a killed process against the alias actually set.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nb_mlops.core.config import Config
from nb_mlops.core.files import append_line
from nb_mlops.core.user import current_user

__all__ = ["ACTIONS", "MOVES", "Journal", "JournalEntry", "journals", "now_iso"]

# what an entry records: a move of the champion alias, or an attempt that changed nothing
ACTIONS = ("promote", "forced-promote", "blocked", "rollback", "request", "reject")
MOVES = ("promote", "forced-promote", "rollback")
STATES = ("pending", "done", "aborted")


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class JournalEntry:
    """One journaled act on a model's champion.

    Attributes:
        id: unique id of the entry.
        when: UTC time the act started (ISO 8601).
        who: the user who acted.
        action: promote | forced-promote | blocked | rollback | request (a promotion waiting for
            an approver) | reject (a request turned down).
        model: registered model name.
        state: pending (write-ahead, alias maybe not moved yet) | done | aborted.
        from_version: champion before the act (None: there was none).
        to_version: champion after the act (blocked: the version it would have been, if known).
        reason: the reason given (required for forced promotions and rollbacks).
        gates: every gate result, as dicts (gate, verdict, measured, expected, detail).
        failed_gates: names of the gates that failed (forced and blocked entries).
        candidate_run: the pipeline run promoted (rollback: the run of the restored version).
        pipeline, pipeline_hash: the pipeline name and the content hash of its version.
        data: snapshot name → `vN:<digest>` used by the candidate run.
        notebook, notebook_sha256, git_commit: where the pipeline came from.
        model_source, model_sha256: the registered artifacts and their digest.
        model_safety: how the model is stored and what loading it trusts (flavor, format,
            trusted_types, reason), as checked against `trusted_model_modules`.
        previous_champion_before: the `previous-champion` alias before the act (restored on abort).
        requester: who asked for an approved promotion (request, its promote or reject entry).
        request_id: the approval request a promote or reject entry decides.
        recovered: True when a pending entry was settled after a crash.
        settled_at: when the entry became done/aborted.
    """

    id: str
    when: str
    who: str
    action: str
    model: str
    state: str = "done"
    from_version: str | None = None
    to_version: str | None = None
    reason: str | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    failed_gates: list[str] = field(default_factory=list)
    candidate_run: str | None = None
    pipeline: str | None = None
    pipeline_hash: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    notebook: str | None = None
    notebook_sha256: str | None = None
    git_commit: str | None = None
    model_source: str | None = None
    model_sha256: str | None = None
    model_safety: dict[str, Any] = field(default_factory=dict)
    previous_champion_before: str | None = None
    requester: str | None = None
    request_id: str | None = None
    recovered: bool = False
    settled_at: str | None = None

    @classmethod
    def new(cls, action: str, model: str, who: str | None = None, **fields: Any) -> JournalEntry:
        """A fresh entry stamped with a new id, the current time and `who` (default: the
        current user)."""
        return cls(
            id=uuid.uuid4().hex,
            when=now_iso(),
            who=who or current_user(),
            action=action,
            model=model,
            **fields,
        )

    @property
    def moves_champion(self) -> bool:
        """True for acts that set the champion alias (not blocked attempts, requests, rejections)."""
        return self.action in MOVES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS = set(JournalEntry.__dataclass_fields__)


def _safe_name(model: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model)
    return safe if safe == model else f"{safe}-{uuid.uuid5(uuid.NAMESPACE_URL, model).hex[:8]}"


class Journal:
    """The journal of one model. Appends are atomic lines, fsynced before returning.

    Callers that append hold the model's promotion lock (`store.lock(cfg, f"promote-{model}")`),
    so records of one model are never interleaved.
    """

    def __init__(self, cfg: Config, model: str) -> None:
        self.model = model
        self.path: Path = cfg.store_dir / "journal" / f"{_safe_name(model)}.jsonl"

    # --- writing ---------------------------------------------------------------------------------

    def append(self, entry: JournalEntry) -> JournalEntry:
        """Append a whole entry (its state as given)."""
        self._write({"record": "entry", **entry.as_dict()})
        return entry

    def settle(self, entry: JournalEntry, state: str, *, recovered: bool = False) -> JournalEntry:
        """Mark a pending entry done or aborted (a short record with the same id)."""
        if state not in STATES:
            raise ValueError(f"unknown journal state {state!r}")
        entry.state = state
        entry.recovered = recovered
        entry.settled_at = now_iso()
        self._write(
            {
                "record": "settle",
                "id": entry.id,
                "state": state,
                "recovered": recovered,
                "settled_at": entry.settled_at,
            }
        )
        return entry

    def _write(self, record: dict[str, Any]) -> None:
        append_line(self.path, (json.dumps(record, sort_keys=True, default=str) + "\n").encode())

    # --- reading ---------------------------------------------------------------------------------

    def entries(self) -> list[JournalEntry]:
        """Every entry, oldest first, with its latest state (torn lines are skipped)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        found: dict[str, JournalEntry] = {}
        for line in raw.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn write of a killed process: the record never completed
            if not isinstance(record, dict) or "id" not in record:
                continue
            if record.get("record") == "settle":
                entry = found.get(record["id"])
                if entry is not None:
                    entry.state = str(record.get("state", entry.state))
                    entry.recovered = bool(record.get("recovered", False))
                    entry.settled_at = record.get("settled_at")
                continue
            fields = {k: v for k, v in record.items() if k in _FIELDS}
            try:
                found[record["id"]] = JournalEntry(**fields)
            except TypeError:
                continue
        return list(found.values())

    def pending(self) -> list[JournalEntry]:
        return [entry for entry in self.entries() if entry.state == "pending"]


def journals(cfg: Config) -> list[Journal]:
    """The journal of every model that has one (for lists across models, such as approvals)."""
    found = []
    for path in sorted((cfg.store_dir / "journal").glob("*.jsonl")):
        journal = Journal(cfg, path.stem)
        journal.path = path
        entries = journal.entries()
        if entries:
            journal.model = entries[0].model
            found.append(journal)
    return found
