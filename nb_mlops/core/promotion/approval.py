"""Promotion requests and their approval: the four-eyes path to `champion`.

With `[promotion] require_approval = true`, `promote` runs the gates and journals a `request`
instead of moving the alias. Another user listed in `approvers` then approves it (the normal
promotion path runs, under the model's lock, journaled with requester and approver) or rejects
it. A request is decided once: under the lock a second approval finds it decided, and a request
whose champion changed since it was made is stale and refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nb_mlops.core import store
from nb_mlops.core.config import Config
from nb_mlops.core.errors import ApprovalError, RequestNotFound
from nb_mlops.core.promotion.access import check_approver
from nb_mlops.core.promotion.journal import MOVES, Journal, JournalEntry, journals
from nb_mlops.core.promotion.registry import CHAMPION, check_model_name, get_alias
from nb_mlops.core.promotion.service import (
    Decision,
    _announce,
    _decision,
    _open,
    prepare,
    promote_locked,
)
from nb_mlops.core.user import current_user

__all__ = ["ApprovalRequest", "approvals", "approve", "reject"]

MIN_PREFIX = 6  # a request may be named by a unique prefix of its id this long or longer


@dataclass
class ApprovalRequest:
    """A promotion waiting for an approver.

    Attributes:
        id: the request's id (its journal entry's).
        model, run_id: what would become champion of what.
        requester, when, reason: who asked, when (UTC) and why.
        champion: the champion version when it was asked (None: there was none).
        stale: True when the champion has changed since: approving it is refused.
        gates: every gate result at request time; failed_gates: those forced past.
    """

    id: str
    model: str
    run_id: str | None
    requester: str
    when: str
    reason: str | None
    champion: str | None
    stale: bool = False
    gates: list[dict[str, Any]] = field(default_factory=list)
    failed_gates: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def approvals(model: str | None = None, *, cfg: Config | None = None) -> list[ApprovalRequest]:
    """The pending promotion requests (of `model`, or of every model), oldest first.

    Example:
        >>> [r.id[:8] for r in nb_mlops.approvals("churn")]  # doctest: +SKIP
        ['3f2a9c01']
    """
    cfg, client = _open(cfg)
    if model is not None:
        check_model_name(model)
    found = []
    for journal in journals(cfg):
        if model is not None and journal.model != model:
            continue
        pending = _pending(journal.entries())
        champion = get_alias(client, journal.model, CHAMPION) if pending else None
        found += [_request(entry, champion) for entry in pending]
    return sorted(found, key=lambda r: r.when)


def approve(
    request_id: str,
    *,
    reason: str | None = None,
    who: str | None = None,
    cfg: Config | None = None,
    announce: bool = True,
) -> Decision:
    """Approve another user's promotion request: the champion moves through the normal path.

    Raises:
        PermissionDenied: `who` is not in `[promotion] approvers`.
        ApprovalError: `who` made the request, it is decided already, or it is stale.
        RequestNotFound: no request of that id.
        PromotionBlocked: a gate fails now (journaled; the request stays pending).
    """
    cfg, client = _open(cfg)
    who = who or current_user()
    check_approver(cfg, who)
    journal, request = _find(cfg, request_id)
    if request.requester == who or request.who == who:
        raise ApprovalError(
            f"user {who!r} asked for request {request.id} and cannot approve it: another "
            "approver must"
        )
    attempt = prepare(cfg, client, str(request.candidate_run), journal.model, request.model_source)
    attempt.force = bool(request.failed_gates)
    attempt.who, attempt.requester, attempt.request_id = who, request.requester, request.id
    attempt.reason = _joined(request.reason, reason)
    with store.lock(cfg, f"promote-{journal.model}"):
        _check_open(journal, request)
        _check_fresh(journal.model, request, get_alias(client, journal.model, CHAMPION))
        decision = promote_locked(attempt)
    if announce:
        _announce(cfg, "promotion", journal.model, decision, run_id=decision.run_id, who=who)
    return decision


def reject(
    request_id: str,
    *,
    reason: str | None = None,
    who: str | None = None,
    cfg: Config | None = None,
) -> Decision:
    """Turn down a promotion request (an approver's act; a requester may withdraw their own).

    Raises:
        PermissionDenied: `who` is neither an approver nor the requester.
        ApprovalError: the request is decided already.
        RequestNotFound: no request of that id.
    """
    cfg, client = _open(cfg)
    who = who or current_user()
    journal, request = _find(cfg, request_id)
    if who != request.requester:
        check_approver(cfg, who)
    with store.lock(cfg, f"promote-{journal.model}"):
        _check_open(journal, request)
        entry = JournalEntry.new(
            "reject",
            journal.model,
            who=who,
            state="done",
            from_version=request.from_version,
            reason=reason,
            candidate_run=request.candidate_run,
            requester=request.requester,
            request_id=request.id,
        )
        journal.append(entry)
    return _decision("REJECTED", entry, [])


# --- internals ------------------------------------------------------------------------------------


def _pending(entries: list[JournalEntry]) -> list[JournalEntry]:
    decided = {e.request_id for e in entries if e.request_id and _decides(e)}
    return [e for e in entries if e.action == "request" and e.id not in decided]


def _decides(entry: JournalEntry) -> bool:
    """A rejection, or a champion move not aborted, settles the request it names."""
    return entry.action == "reject" or (entry.action in MOVES and entry.state != "aborted")


def _request(entry: JournalEntry, champion: str | None) -> ApprovalRequest:
    return ApprovalRequest(
        id=entry.id,
        model=entry.model,
        run_id=entry.candidate_run,
        requester=entry.requester or entry.who,
        when=entry.when,
        reason=entry.reason,
        champion=entry.from_version,
        stale=champion != entry.from_version,
        gates=list(entry.gates),
        failed_gates=list(entry.failed_gates),
    )


def _find(cfg: Config, request_id: str) -> tuple[Journal, JournalEntry]:
    """The journal and entry of the request named by its id or a unique prefix of it."""
    text = str(request_id).strip().lower()
    hits = []
    if len(text) >= MIN_PREFIX:
        for journal in journals(cfg):
            hits += [
                (journal, e)
                for e in journal.entries()
                if e.action == "request" and e.id.startswith(text)
            ]
    if len(hits) != 1:
        which = "matches several requests" if hits else "names no promotion request"
        raise RequestNotFound(
            f"{str(request_id)[:40]!r} {which}; `nb-mlops approvals` lists the pending ones"
        )
    return hits[0]


def _check_open(journal: Journal, request: JournalEntry) -> None:
    """Under the lock: refuse a request already decided (so one of two approvals wins)."""
    done = [e for e in journal.entries() if e.request_id == request.id and _decides(e)]
    if done:
        verb = "rejected" if done[0].action == "reject" else "approved"
        raise ApprovalError(
            f"request {request.id} was {verb} already by {done[0].who} at {done[0].when}"
        )


def _check_fresh(model: str, request: JournalEntry, champion: str | None) -> None:
    """Refuse a request made against another champion than the current one."""
    if champion != request.from_version:
        raise ApprovalError(
            f"request {request.id} is stale: the champion of {model} is now "
            f"{champion or 'none'}, it was {request.from_version or 'none'} when "
            f"{request.requester} asked; promote again to make a new request"
        )


def _joined(asked: str | None, approved: str | None) -> str | None:
    if approved and approved.strip():
        return f"{asked or '-'} (approval: {approved.strip()})"
    return asked
